"""`stvl convert import/export/verify/inspect` and `stvl_jax.load_model` on tiny random transformers `Sam2Model`
checkpoints: export gives back the HF state dict bit for bit (names, shapes, dtypes, bytes), a config.json that
`Sam2Model.from_pretrained` loads and the processor configs; verify runs transformers against the import."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sam2_fixtures import IMAGE, safetensors_state
from stvl_jax.cli import main
from stvl_jax.errors import CheckpointError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from sam2_fixtures import save_image_model

    return save_image_model(tmp_path_factory.mktemp("sam2") / "hf")


@pytest.fixture(scope="module")
def ckpt(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sam2ckpt") / "ckpt"
    assert main(["convert", "import", "--hf", str(hf_dir), "--out", str(out), "--quiet"]) == 0
    return out


def test_import_writes_an_stvl_checkpoint(ckpt):
    info = json.loads((ckpt / "stvl_config.json").read_text())
    assert info["format"] == "stvl-jax/sam2" and info["family"] == "sam2"
    # no processor config next to the weights: SAM2's default at the model's input size
    assert info["preprocessing"]["image_size"] == IMAGE
    assert info["source"]["hf_config"]["model_type"] == "sam2"
    assert (ckpt / "integrity.json").is_file() and (ckpt / "params").is_dir()


def test_export_is_bit_exact_and_loads_in_transformers(hf_dir, ckpt, tmp_path):
    from transformers import Sam2Model

    out = tmp_path / "exported"
    assert main(["convert", "export", "--ckpt", str(ckpt), "--out", str(out), "--quiet"]) == 0
    want, got = safetensors_state(hf_dir), safetensors_state(out)
    assert sorted(want) == sorted(got)
    for name in want:
        assert want[name].dtype == got[name].dtype and want[name].shape == got[name].shape, name
        assert want[name].tobytes() == got[name].tobytes(), name
    model = Sam2Model.from_pretrained(str(out))
    reference = Sam2Model.from_pretrained(str(hf_dir))
    assert model.config.to_dict()["vision_config"] == reference.config.to_dict()["vision_config"]
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["size"] == {"height": IMAGE, "width": IMAGE} and pre["image_mean"] == [0.485, 0.456, 0.406]
    assert not (out / "video_preprocessor_config.json").exists()


def test_export_writes_the_checkpoints_preprocessing(hf_dir, tmp_path):
    """Processor configs seen on import become the checkpoint's preprocessing and are written back as they were."""
    import shutil

    src = tmp_path / "hf"
    shutil.copytree(hf_dir, src)
    shipped = {"image_processor_type": "Sam2ImageProcessorFast", "size": {"height": IMAGE, "width": IMAGE},
               "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "resample": 2, "do_resize": True,
               "rescale_factor": 1 / 255, "mask_size": {"height": IMAGE // 4, "width": IMAGE // 4}, "custom": 7}
    (src / "preprocessor_config.json").write_text(json.dumps(shipped))
    ckpt = tmp_path / "ckpt"
    assert main(["convert", "import", "--hf", str(src), "--out", str(ckpt), "--quiet"]) == 0
    pre = json.loads((ckpt / "stvl_config.json").read_text())["preprocessing"]
    assert pre["image_size"] == IMAGE and pre["mean"] == [0.5, 0.5, 0.5] and pre["std"] == [0.25, 0.25, 0.25]
    out = tmp_path / "out"
    main(["convert", "export", "--ckpt", str(ckpt), "--out", str(out), "--quiet"])
    assert json.loads((out / "preprocessor_config.json").read_text()) == shipped
    # a processor that resizes to another size than the model's input: one line, nothing written
    (src / "preprocessor_config.json").write_text(json.dumps({**shipped, "size": {"height": 512, "width": 512}}))
    assert main(["convert", "import", "--hf", str(src), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # compiling the whole model on XLA:CPU: ~20-40 s on a loaded 2-core machine
def test_verify_against_transformers(hf_dir, ckpt, capsys):
    from converters.sam2_verify import verify_sam2

    report = verify_sam2(hf_dir, ckpt)
    assert report.masks == 2 * 3 and report.max_abs_diff <= 1e-4, report
    assert main(["convert", "verify", "--hf", str(hf_dir), "--ckpt", str(ckpt)]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.slow
def test_verify_fails_on_a_changed_weight(hf_dir, ckpt, tmp_path, capsys):
    """A checkpoint whose weights differ from the HF directory's fails verify (nonzero exit, FAIL)."""
    import shutil

    from safetensors.numpy import load_file, save_file

    other = tmp_path / "hf"
    shutil.copytree(hf_dir, other)
    state = load_file(str(other / "model.safetensors"))
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"] + 0.5
    save_file(state, str(other / "model.safetensors"), metadata={"format": "pt"})
    assert main(["convert", "verify", "--hf", str(other), "--ckpt", str(ckpt)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_inspect_lists_sam2_tensors(ckpt, hf_dir, capsys):
    assert main(["convert", "inspect", str(ckpt), "--flat"]) == 0
    out = capsys.readouterr().out
    assert "Orbax, sam2" in out and "225 tensors" in out
    assert all(any(line.strip().startswith(leaf) for line in out.splitlines()) for leaf in ("iou_token", "pos_embed"))
    assert main(["convert", "inspect", str(hf_dir)]) == 0
    assert "mask_decoder" in capsys.readouterr().out


def test_load_model_returns_the_flax_sam2_model(hf_dir, ckpt):
    import stvl_jax
    from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig
    from stvl_jax.models.sam2.image_model import Sam2ImageModel
    from stvl_jax.nn.params import flat_params

    a, b = stvl_jax.load_model(ckpt), stvl_jax.load_model(hf_dir)
    for m in (a, b):
        assert isinstance(m, Sam2ImageModel) and m.family == "sam2"
        assert m.preprocessing == Sam2PreprocessConfig(image_size=IMAGE)
    pa, pb = flat_params(a), flat_params(b)
    assert sorted(pa) == sorted(pb)
    for k in pa:
        np.testing.assert_array_equal(np.asarray(pa[k].get_value()), np.asarray(pb[k].get_value()))


@pytest.mark.slow  # placing every parameter on 8 CPU devices: ~15 s on a loaded 2-core machine
def test_save_model_and_mesh_placement(hf_dir, tmp_path):
    """stvl_jax.save_model dispatches a SAM2 model to the SAM2 format; load_model(mesh=...) places the params."""
    import jax

    import stvl_jax
    from stvl_jax.nn.params import flat_params

    model = stvl_jax.load_model(hf_dir)
    path = stvl_jax.save_model(model, None, tmp_path / "saved")
    assert json.loads((path / "stvl_config.json").read_text())["family"] == "sam2"
    mesh = stvl_jax.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    placed = stvl_jax.load_model(path, mesh=mesh)
    for key, var in flat_params(placed).items():
        value = var.get_value()
        assert isinstance(value, jax.Array) and len(value.sharding.device_set) == 8, key
        np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_params(model)[key].get_value()))


def test_bf16_checkpoint_round_trips(tmp_path):
    from sam2_fixtures import save_image_model

    hf = save_image_model(tmp_path / "hf", seed=1, dtype=torch.bfloat16)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    main(["convert", "import", "--hf", str(hf), "--out", str(ckpt), "--quiet"])
    main(["convert", "export", "--ckpt", str(ckpt), "--out", str(out), "--quiet"])
    want, got = safetensors_state(hf), safetensors_state(out)
    assert sorted(want) == sorted(got) and all(want[k].tobytes() == got[k].tobytes() for k in want)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_sam2_loader_refuses_a_qwen_checkpoint(tmp_path):
    from stvl_jax.models.sam2.loading import load_model

    (tmp_path / "params").mkdir()
    (tmp_path / "stvl_config.json").write_text(json.dumps({"format": "stvl-jax/qwen-vl", "format_version": 1,
                                                           "model": {}}))
    with pytest.raises(CheckpointError, match="format 'stvl-jax/qwen-vl', expected 'stvl-jax/sam2'"):
        load_model(tmp_path)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    with pytest.raises(CheckpointError, match="HF 'qwen3_vl' model, not SAM2"):
        load_model(hf)


@pytest.mark.parametrize("processor,reason", [
    ({"size": {"height": 1024, "width": 768}}, "not a square side"),
    ({"size": {"height": 1024, "width": 1024}, "resample": 3}, "not bilinear"),
    ({"size": {"height": 1024, "width": 1024}, "do_normalize": False}, "normalisation"),
])
def test_unsupported_processor_configs_are_one_clear_error(tmp_path, processor, reason):
    from converters.sam2_convert import hf_dir_preprocessing

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    with pytest.raises(CheckpointError, match=reason) as e:
        hf_dir_preprocessing(tmp_path, "sam2")
    assert "preprocessor_config.json" in str(e.value)
