"""Bad input -> exit code 2 and one line naming the input (tensor key and both shapes for shape mismatches)."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.torch


def _rewrite(src, dst, edit):
    """Copy an HF dir, applying edit(dict of torch tensors) -> dict to its weights."""
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(edit(load_file(src / "model.safetensors")), dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _one_line_error(result):
    rc, out, err = result
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stvl convert: error: "), err
    return lines[0]


KEY = "model.language_model.layers.1.mlp.up_proj.weight"


def test_missing_key(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    bad = _rewrite(src, tmp_path / "bad", lambda sd: {k: v for k, v in sd.items() if k != KEY})
    msg = _one_line_error(stvl("import", "--hf", bad, "--out", tmp_path / "o", "--quiet"))
    assert "lacks 1 tensor" in msg and KEY in msg
    assert not (tmp_path / "o").exists()


def test_extra_key(hf_checkpoint, stvl, tmp_path):
    import torch

    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    bad = _rewrite(src, tmp_path / "bad", lambda sd: {**sd, "model.visual.blocks.7.norm1.weight": torch.ones(32)})
    msg = _one_line_error(stvl("import", "--hf", bad, "--out", tmp_path / "o", "--quiet"))
    assert "does not know" in msg and "model.visual.blocks.7.norm1.weight" in msg


def test_shape_mismatch_names_key_and_both_shapes(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    bad = _rewrite(src, tmp_path / "bad", lambda sd: {**sd, KEY: sd[KEY][:, :60].contiguous()})
    msg = _one_line_error(stvl("import", "--hf", bad, "--out", tmp_path / "o", "--quiet"))
    assert KEY in msg and "(96, 60)" in msg and "(96, 64)" in msg


def test_missing_and_wrong_paths(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    msg = _one_line_error(stvl("import", "--hf", tmp_path / "nope", "--out", tmp_path / "o"))
    assert str(tmp_path / "nope") in msg and "does not exist" in msg
    msg = _one_line_error(stvl("export", "--ckpt", tmp_path / "nope", "--out", tmp_path / "o"))
    assert "does not exist" in msg
    msg = _one_line_error(stvl("export", "--ckpt", src, "--out", tmp_path / "o"))  # an HF dir, not ours
    assert "not an stvl-jax checkpoint" in msg and "stvl convert import" in msg
    (tmp_path / "empty").mkdir()
    msg = _one_line_error(stvl("import", "--hf", tmp_path / "empty", "--out", tmp_path / "o"))
    assert "holds no weights" in msg
    nocfg = tmp_path / "nocfg"
    nocfg.mkdir()
    shutil.copy(src / "model.safetensors", nocfg)
    msg = _one_line_error(stvl("import", "--hf", nocfg, "--out", tmp_path / "o"))
    assert "config.json" in msg and "does not exist" in msg


def test_corrupt_safetensors(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(src / "config.json", bad)
    data = (src / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    msg = _one_line_error(stvl("import", "--hf", bad, "--out", tmp_path / "o"))
    assert "model.safetensors" in msg and "bad data offsets" in msg
    (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    msg = _one_line_error(stvl("import", "--hf", bad, "--out", tmp_path / "o"))
    assert "corrupt safetensors header" in msg


def test_unsupported_config(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "llava"}))
    msg = _one_line_error(stvl("import", "--hf", bad, "--out", tmp_path / "o"))
    assert "'llava'" in msg


def test_existing_output_needs_overwrite(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    assert stvl("import", "--hf", src, "--out", tmp_path / "c", "--quiet")[0] == 0
    msg = _one_line_error(stvl("import", "--hf", src, "--out", tmp_path / "c", "--quiet"))
    assert "already exists" in msg and "--overwrite" in msg
    assert stvl("import", "--hf", src, "--out", tmp_path / "c", "--quiet", "--overwrite")[0] == 0


def test_checkpoint_config_mismatch_and_format(hf_checkpoint, stvl, tmp_path):
    from stvl_jax.errors import CheckpointError
    from stvl_jax.models.qwen_vl.loading import load_model

    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    assert stvl("import", "--hf", src, "--out", tmp_path / "c", "--quiet")[0] == 0
    cfg_file = tmp_path / "c" / "stvl_config.json"
    info = json.loads(cfg_file.read_text())

    info["model"]["text"]["intermediate_size"] = 128
    cfg_file.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"'language_model/layers/mlp/down_proj/kernel' has shape "
                                              r"\(3, 96, 64\), the config expects \(3, 128, 64\)"):
        load_model(tmp_path / "c")
    msg = _one_line_error(stvl("export", "--ckpt", tmp_path / "c", "--out", tmp_path / "o"))
    assert "down_proj/kernel" in msg

    info["model"]["text"]["intermediate_size"] = 96
    info["model"]["text"]["hidden_sise"] = 64  # typo
    cfg_file.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="unknown key 'text.hidden_sise'"):
        load_model(tmp_path / "c")

    del info["model"]["text"]["hidden_sise"]
    info["format_version"] = 99
    cfg_file.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_model(tmp_path / "c")
    cfg_file.unlink()
    with pytest.raises(CheckpointError, match="not an stvl-jax checkpoint"):
        load_model(tmp_path / "c")


def test_bad_cli_values(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    assert stvl("import", "--hf", src, "--out", tmp_path / "c", "--quiet")[0] == 0
    msg = _one_line_error(stvl("export", "--ckpt", tmp_path / "c", "--out", tmp_path / "o", "--max-shard-size", "5XB"))
    assert "'5XB'" in msg
    msg = _one_line_error(stvl("export", "--ckpt", tmp_path / "c", "--out", tmp_path / "o", "--legacy-names"))
    assert "legacy names exist only for Qwen2.5-VL" in msg
    rc, _, err = stvl("export", "--ckpt", tmp_path / "c", "--out", tmp_path / "o", "--dtype", "int8")
    assert rc == 2 and "invalid choice" in err  # argparse


def test_import_reads_each_tensor_once_and_checks_shapes_first(hf_checkpoint):
    """Streaming contract of `params_from_hf`: every shape is checked from headers before any tensor is read,
    and each tensor is then read exactly once."""
    from converters.hf_checkpoint import HFCheckpoint
    from converters.qwen_vl_config import from_hf_dict
    from converters.qwen_vl_convert import params_from_hf
    from stvl_jax.errors import CheckpointError

    src, _ = hf_checkpoint("qwen2_5_vl", tie=False)
    reads = []
    with HFCheckpoint(src) as ck:
        config = from_hf_dict(ck.config())

        def get(name):
            reads.append(name)
            return ck.get(name)

        last = "lm_head.weight"
        with pytest.raises(CheckpointError, match=r"'lm_head.weight' has shape \(1, 2\), the config expects "
                                                  r"\(256, 64\)"):
            params_from_hf(config, ck.names, get, get_shape=lambda n: (1, 2) if n == last else ck.spec(n)[0])
        assert reads == []
        params_from_hf(config, ck.names, get, get_shape=lambda n: ck.spec(n)[0])
        assert sorted(reads) == sorted(ck.names)


def test_layers_of_one_parameter_in_different_dtypes(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    bad = _rewrite(src, tmp_path / "bad", lambda sd: {**sd, KEY: sd[KEY].half()})
    msg = _one_line_error(stvl("import", "--hf", bad, "--out", tmp_path / "o", "--quiet"))
    assert KEY in msg and "float16" in msg and "float32" in msg and "--dtype" in msg
    assert stvl("import", "--hf", bad, "--out", tmp_path / "o", "--dtype", "float32", "--quiet")[0] == 0
