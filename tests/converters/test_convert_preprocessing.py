"""`stvl convert import` reads the HF processor configs into the checkpoint's preprocessing; export writes them
back; transformers' processors read what export writes."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.torch

# a non-default Qwen2.5-VL processor: other pixel bounds and statistics than the family default
IMAGE = {"min_pixels": 6272, "max_pixels": 200704, "patch_size": 7, "temporal_patch_size": 2, "merge_size": 2,
         "image_mean": [0.25, 0.5, 0.75], "image_std": [0.2, 0.3, 0.4],
         "image_processor_type": "Qwen2_5_VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}


def test_import_reads_a_non_default_processor_config_and_export_writes_it_back(hf_checkpoint, stvl, tmp_path):
    import stvl_jax
    from stvl_jax.models.qwen_vl.loading import read_preprocessing

    src, _ = hf_checkpoint("qwen2_5_vl")
    hf = tmp_path / "hf_in"
    shutil.copytree(src, hf)
    (hf / "preprocessor_config.json").write_text(json.dumps(IMAGE))
    rc, _, err = stvl("import", "--hf", hf, "--out", tmp_path / "ckpt", "--quiet")
    assert rc == 0, err
    pre = read_preprocessing(tmp_path / "ckpt")
    assert (pre.image.min_pixels, pre.image.max_pixels) == (6272, 200704)
    assert (pre.video.min_pixels, pre.video.max_pixels, pre.video.budget) == (6272, 200704, "frame")
    assert pre.image_mean == (0.25, 0.5, 0.75) and pre.image_std == (0.2, 0.3, 0.4)
    model = stvl_jax.load_model(tmp_path / "ckpt")
    assert model.preprocessing == pre and model.visual.pixel_mean_std == (pre.image_mean, pre.image_std)

    rc, _, err = stvl("export", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf_out", "--quiet")
    assert rc == 0, err
    assert json.loads((tmp_path / "hf_out" / "preprocessor_config.json").read_text()) == IMAGE


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_written_processor_configs_are_what_transformers_reads(family, tmp_path):
    """A config trained here (no HF files to copy) is written in keys transformers' processors load."""
    from transformers import AutoImageProcessor

    from converters.qwen_vl_preprocess import preprocess_from_hf, preprocess_to_hf
    from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig

    pre = PreprocessConfig.default(family).updated({"image": {"max_pixels": 3136 * 4}, "frames": {"fps": 1.0}})
    image, video = preprocess_to_hf(pre)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(image))
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(video))
    ip = AutoImageProcessor.from_pretrained(tmp_path)
    assert (ip.size["shortest_edge"], ip.size["longest_edge"]) == (pre.image.min_pixels, pre.image.max_pixels)
    assert tuple(ip.image_mean) == pre.image_mean and ip.patch_size == pre.patch_size
    # (transformers' video processors need torchvision, absent here: the file is checked by reading it back)
    want = "Qwen3VLVideoProcessor" if pre.video.budget == "clip" else "Qwen2VLVideoProcessor"
    assert video["video_processor_type"] == want
    assert preprocess_from_hf(PreprocessConfig.default(family), image, video) == pre  # reads back the same


def test_checkpoint_written_before_the_preprocessing_section_still_loads(tmp_path):
    """An older stvl_config.json (mean/std under model.vision, no "preprocessing") reads as the family default
    with the mean/std it recorded."""
    from flax import nnx

    from stvl_jax.models.qwen_vl.loading import read_preprocessing, save_model
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
    from stvl_jax.models.qwen_vl.presets import load_model_config

    config = load_model_config("qwen25vl_tiny")
    ckpt = save_model(QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(0)), None, tmp_path / "ckpt")
    info = json.loads((ckpt / "stvl_config.json").read_text())
    del info["preprocessing"]
    info["model"]["vision"].update(image_mean=[0.1, 0.2, 0.3], image_std=None)
    (ckpt / "stvl_config.json").write_text(json.dumps(info))
    pre = read_preprocessing(ckpt)
    assert pre == config.default_preprocessing().updated({"image_mean": (0.1, 0.2, 0.3)})
