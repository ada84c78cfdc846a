"""STRIDE checkpoints: a tiny random one built like STRIDE-2B (HF Qwen3-VL, vocabulary resized for the three
tokens, saved with architectures ["Qwen3VLForProactiveMDM"] and the trigger-window keys) imports, loads as a
STRIDE model with the recorded window, gives HF's logits on the two label rows, and exports back unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def stride_hf(tmp_path_factory):
    from qwen_vl_helpers import tiny_hf_config, torch_model

    model = torch_model(tiny_hf_config("qwen3_vl", tie=True), seed=3)
    model.resize_token_embeddings(259)  # 256 + <activation>, <active>, <inactive> (ids 256, 257, 258)
    directory = tmp_path_factory.mktemp("stride_hf")
    model.save_pretrained(directory)
    # save_pretrained writes the class name; the hub's STRIDE config names the MDM class and its window
    config = json.loads((directory / "config.json").read_text())
    config.update(architectures=["Qwen3VLForProactiveMDM"], trigger_window_past=16, trigger_window_future=0)
    (directory / "config.json").write_text(json.dumps(config))
    return directory, model


class FakeTokenizer:
    def get_vocab(self):
        return {"<activation>": 256, "<active>": 257, "<inactive>": 258}


def _convert(*args):
    from stvl_jax.cli import main

    assert main(["convert", *map(str, args), "--quiet"]) == 0


def test_import_load_export_roundtrip(stride_hf, tmp_path):
    import torch
    from qwen_vl_helpers import build_batch
    from safetensors.torch import load_file
    from transformers import Qwen3VLForConditionalGeneration

    from stvl_jax.models.stride.model import load_stride

    src, hf = stride_hf
    _convert("import", "--hf", src, "--out", tmp_path / "ckpt")
    model, cfg = load_stride(tmp_path / "ckpt", FakeTokenizer())
    assert model.config.architecture == "Qwen3VLForProactiveMDM" and model.config.text.vocab_size == 259
    assert cfg.window == 16 and cfg.label_token_ids == (258, 257)

    # the 2-way head = HF's full logits restricted to the [<inactive>, <active>] columns
    batch = build_batch(hf.config, [[("text", 5), ("video", (2, 4, 4)), ("text", 4)]])
    batch["input_ids"][0, -3:] = [256, 257, 258]
    with torch.no_grad():
        want = hf(**{k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}).logits.numpy()[..., [258, 257]]
    out = model(return_hidden=True, **batch)
    got = np.asarray(model.token_logits(out.hidden_states, cfg.label_token_ids))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)

    _convert("export", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf")
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert exported["architectures"] == ["Qwen3VLForProactiveMDM"]
    assert exported["text_config"]["vocab_size"] == 259 and exported["trigger_window_past"] == 16
    a, b = load_file(src / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    reloaded = Qwen3VLForConditionalGeneration.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    with torch.no_grad():
        again = reloaded(**{k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}).logits.numpy()
    np.testing.assert_array_equal(again[..., [258, 257]], want)


def test_trained_stride_exports_with_the_architecture_name(tmp_path):
    """A checkpoint written from the stride_tiny preset (no HF origin) gets the STRIDE architecture string."""
    from flax import nnx

    from stvl_jax.models.qwen_vl.loading import save_model
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
    from stvl_jax.models.qwen_vl.presets import load_model_config

    model = QwenVLForConditionalGeneration(load_model_config("stride_tiny"), rngs=nnx.Rngs(0))
    save_model(model, None, tmp_path / "ckpt")
    _convert("export", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3VLForProactiveMDM"] and cfg["text_config"]["vocab_size"] == 512


def test_window_and_fps_are_read_from_the_checkpoint_header(tiny_model, tmp_path):
    """What STRIDE training records (window, resolution, clip fps) is read from the checkpoint's stvl_config.json;
    a trainer's run/meta.json next to it is not consulted."""
    import json
    import types

    from data_pipelines.formats.stride import StrideWindowConfig
    from data_pipelines.grain.config import PipelineConfig
    from stvl_jax.models.qwen_vl.loading import save_model
    from stvl_jax.models.stride.config import recorded_settings
    from stvl_jax.train.data import checkpoint_sections

    pc = PipelineConfig(index="x.jsonl", tokenizer="t", format="stride", stride_fps=2.0,
                        stride=StrideWindowConfig(window=8, resolution=0.5))
    sections = checkpoint_sections(types.SimpleNamespace(config=pc))
    ckpt = save_model(tiny_model, None, tmp_path / "ckpt", sections=sections)
    (ckpt / "run").mkdir()
    (ckpt / "run" / "meta.json").write_text(json.dumps({"config": {"data": {"pipeline": {"stride": {"window": 99}}}}}))
    assert recorded_settings(ckpt) == {"window": {"window": 8, "resolution": 0.5, "single_sequence": False},
                                       "fps": 2.0}
