"""Shared fixtures of the STRIDE tests: the tiny tokenizer (<activation>=10, <active>=11, <inactive>=12), a
random tiny STRIDE model, and a small synthetic set."""

import pytest
from flax import nnx

from qwen_vl_helpers import per_frame_preprocessing
from data_pipelines.synthetic import SynthConfig, generate_dataset
from data_pipelines.tokenizer import build_tiny_tokenizer
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config

# 64 x 64 frames: 4 x 4 patches, 4 tokens per frame pair
VISION = per_frame_preprocessing("qwen3_vl", max_pixels=64 * 64)


@pytest.fixture(scope="session")
def vision():
    return VISION


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    return build_tiny_tokenizer(str(tmp_path_factory.mktemp("stride_tok")))


@pytest.fixture(scope="session")
def tok(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


@pytest.fixture(scope="session")
def tiny_model():
    return QwenVLForConditionalGeneration(load_model_config("stride_tiny"), rngs=nnx.Rngs(0))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("stride_synth"))
    generate_dataset(root, SynthConfig(num_videos=20, seed=3), workers=1)
    return root
