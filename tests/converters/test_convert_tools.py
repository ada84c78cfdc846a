"""`stvl convert verify` and `stvl convert inspect`, and the streaming safetensors reader/writer against the
safetensors library."""

from __future__ import annotations

import json
import re

import ml_dtypes
import numpy as np
import pytest


@pytest.mark.torch
def test_verify_passes_on_a_faithful_import_and_fails_on_other_weights(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen2_5_vl", tie=False)
    other, _ = hf_checkpoint("qwen2_5_vl", tie=False, seed=1)  # same config, different weights
    assert stvl("import", "--hf", src, "--out", tmp_path / "c", "--quiet")[0] == 0

    rc, out, err = stvl("verify", "--hf", src, "--ckpt", tmp_path / "c")
    assert rc == 0, err
    m = re.search(r"max \|Δlogit\| (\S+) .*KL\(HF‖ours\) mean (\S+) max (\S+)", out)
    assert m and "OK" in out
    assert float(m.group(1)) < 1e-4 and float(m.group(3)) < 1e-9

    rc, out, _ = stvl("verify", "--hf", other, "--ckpt", tmp_path / "c")
    assert rc == 1 and "FAIL" in out
    assert float(re.search(r"max \|Δlogit\| (\S+)", out).group(1)) > 1e-2


@pytest.mark.torch
def test_verify_refuses_a_different_architecture(hf_checkpoint, stvl, tmp_path):
    src, _ = hf_checkpoint("qwen3_vl", tie=True)
    untied, _ = hf_checkpoint("qwen3_vl", tie=False)
    assert stvl("import", "--hf", src, "--out", tmp_path / "c", "--quiet")[0] == 0
    rc, _, err = stvl("verify", "--hf", untied, "--ckpt", tmp_path / "c")
    assert rc == 2 and "describe different models" in err and "tie_word_embeddings" in err


def test_synthetic_batch_matches_the_qwen3_processor_layout():
    """Placeholder counts follow the grids (what the model validates), and Qwen3-VL videos are one
    <vision_start> block per temporal group."""
    from converters.verify import synthetic_batch
    from stvl_jax.models.qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig

    config = QwenVLConfig(
        family="qwen3_vl", tie_word_embeddings=True,
        vision=VisionConfig(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                            num_position_embeddings=16),
        text=TextConfig(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=16, mrope_section=(2, 3, 3),
                        mrope_interleaved=True))
    b = synthetic_batch(config)
    ids = b["input_ids"][0]
    assert (ids == config.image_token_id).sum() == 1 * 4 * 6 // 4
    assert (ids == config.video_token_id).sum() == 2 * 4 * 4 // 4
    assert (ids == config.vision_start_token_id).sum() == 1 + 2
    assert b["attention_mask"][1].sum() == 9 and b["attention_mask"][1, 0] == 0  # left padded
    assert b["pixel_values"].shape == (24, 3 * 2 * 16 * 16)
    np.testing.assert_array_equal(b["mm_token_type_ids"][0] == 1, ids == config.image_token_id)


@pytest.mark.torch
def test_inspect_hf_and_orbax(hf_checkpoint, stvl, tmp_path):
    src, model = hf_checkpoint("qwen3_vl", tie=False)
    rc, out, err = stvl("inspect", src)
    assert rc == 0, err
    n_params = sum(p.numel() for p in model.state_dict().values())
    assert f"{len(model.state_dict())} tensors, {n_params:,} parameters (float32" in out
    lines = [line.split() for line in out.splitlines()]
    # layers collapse to one range; leaves show the shape HF stores and the dtype
    assert ["layers.[0-2]"] in lines
    assert ["q_proj.weight", "(64,", "64)", "float32"] in lines
    assert ["weight", "(32,", "3,", "2,", "8,", "8)", "float32"] in lines  # Conv3d patch embed
    rc, out_flat, _ = stvl("inspect", src, "--flat")
    assert "layers.[0-2]" not in out_flat and len(out_flat.splitlines()) > len(out.splitlines())

    assert stvl("import", "--hf", src, "--out", tmp_path / "c", "--quiet")[0] == 0
    rc, out, err = stvl("inspect", tmp_path / "c")
    assert rc == 0, err
    assert "stvl-jax checkpoint (Orbax)" in out and f"{n_params:,} parameters" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["q_proj/kernel", "(3,", "64,", "4,", "16)", "float32"] in lines  # stacked layers, heads split out
    assert ["kernel", "(384,", "32)", "float32"] in lines  # Conv3d as a (C*T*P*P, D) matmul


# ------------------------------------------------------------------------------------------ safetensors I/O
def test_writer_output_reads_back_with_the_safetensors_library(tmp_path):
    import torch
    from safetensors import safe_open

    from converters.safetensors_io import plan_shards, write_shards

    rng = np.random.default_rng(0)
    tensors = {
        "a.bf16": rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16),
        "b.f32": rng.standard_normal((7,)).astype(np.float32),
        "c.f16": rng.standard_normal((2, 2, 3)).astype(np.float16),
        "d.i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "e.scalar": np.float32(3.5).reshape(()),
        "f.empty": np.zeros((0, 4), np.float32),
        "g.bool": np.array([True, False, True]),
    }
    specs = [(k, v.shape, v.dtype) for k, v in tensors.items()]
    shards = plan_shards(specs, 40)
    assert len(shards) > 1
    weight_map = write_shards(tmp_path, shards, iter(tensors.items()))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == weight_map and set(weight_map) == set(tensors)
    for name, value in tensors.items():
        with safe_open(tmp_path / weight_map[name], framework="pt") as f:
            got = f.get_tensor(name)
        if value.dtype == ml_dtypes.bfloat16:
            assert got.dtype == torch.bfloat16
            got = got.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            got = got.numpy()
        assert got.dtype == value.dtype and got.shape == value.shape
        np.testing.assert_array_equal(got.reshape(-1).view(np.uint8),
                                      np.ascontiguousarray(value).reshape(-1).view(np.uint8))


def test_reader_matches_the_safetensors_library(tmp_path):
    import torch
    from safetensors.torch import save_file

    from converters.safetensors_io import read_header, read_tensor

    src = {"x": torch.randn(4, 3).to(torch.bfloat16), "y": torch.arange(5, dtype=torch.int32),
           "z": torch.randn(2, 1, 3, dtype=torch.float64)}
    save_file(src, tmp_path / "m.safetensors", metadata={"format": "pt", "note": "hi"})
    infos, meta = read_header(tmp_path / "m.safetensors")
    assert meta == {"format": "pt", "note": "hi"}
    for name, t in src.items():
        got = read_tensor(infos[name])
        want = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if t.dtype == torch.bfloat16 else t.numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8))


def test_parse_size():
    from converters.safetensors_io import parse_size
    from stvl_jax.errors import CheckpointError

    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("1.5kb") == 1500
    assert parse_size("123") == 123
    with pytest.raises(CheckpointError, match="'lots'"):
        parse_size("lots")
