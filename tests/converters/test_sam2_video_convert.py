"""`stvl convert import/export` and `stvl_jax.load_model` for HF `Sam2VideoModel` checkpoints (model_type
`sam2_video`): a tiny random transformers model saved with `save_pretrained`, imported, exported back bit for
bit (every tensor of HF's state dict: image path + memory encoder/attention + memory embeddings), reloaded by
`Sam2VideoModel.from_pretrained`, and loaded as our Flax `Sam2VideoModel`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stvl_jax.cli import main
from sam2_fixtures import IMAGE

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    from sam2_fixtures import save_video_model

    root = tmp_path_factory.mktemp("sam2video")
    hf = save_video_model(root / "hf")
    ckpt = root / "ckpt"
    assert main(["convert", "import", "--hf", str(hf), "--out", str(ckpt), "--quiet"]) == 0
    return hf, ckpt


def test_export_is_bit_exact_and_loads_in_transformers(dirs, tmp_path):
    from transformers import Sam2VideoModel

    from sam2_fixtures import safetensors_state

    hf, ckpt = dirs
    info = json.loads((ckpt / "stvl_config.json").read_text())
    assert info["family"] == "sam2_video" and info["format"] == "stvl-jax/sam2"
    out = tmp_path / "out"
    assert main(["convert", "export", "--ckpt", str(ckpt), "--out", str(out), "--quiet"]) == 0
    want, got = safetensors_state(hf), safetensors_state(out)
    assert sorted(want) == sorted(got) and any(k.startswith("memory_attention.") for k in want)
    for name in want:
        assert want[name].dtype == got[name].dtype and want[name].tobytes() == got[name].tobytes(), name
    reloaded = Sam2VideoModel.from_pretrained(str(out))
    assert reloaded.config.num_maskmem == 3
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        data = json.loads((out / name).read_text())
        assert data["size"] == {"height": IMAGE, "width": IMAGE} and data["image_std"] == [0.229, 0.224, 0.225]


def test_load_model_returns_the_video_model(dirs):
    import stvl_jax
    from stvl_jax.models.sam2.video_model import Sam2VideoModel
    from stvl_jax.nn.params import flat_params

    hf, ckpt = dirs
    a, b = stvl_jax.load_model(ckpt), stvl_jax.load_model(hf)
    assert isinstance(a, Sam2VideoModel) and isinstance(b, Sam2VideoModel)
    assert a.family == b.family == "sam2_video" and a.preprocessing.image_size == IMAGE  # the model's input
    pa, pb = flat_params(a), flat_params(b)
    assert sorted(pa) == sorted(pb) and "memory_attention/layers/linear1/kernel" in pa
    for k in pa:
        np.testing.assert_array_equal(np.asarray(pa[k].get_value()), np.asarray(pb[k].get_value()))


@pytest.mark.slow  # compiling the image path on XLA:CPU
def test_verify_image_path_against_transformers(dirs, capsys):
    import importlib.util

    hf, ckpt = dirs
    assert main(["convert", "verify", "--hf", str(hf), "--ckpt", str(ckpt), "--atol", "1e-4"]) == 0
    out = capsys.readouterr().out
    assert "sam2_video" in out
    if importlib.util.find_spec("stvl_jax.models.sam2.tracker") is None:
        assert "tracking path not compared" in out  # said, not silently skipped
    else:
        assert "tracking, 16 output frames" in out and "differing 0.00e+00" in out
