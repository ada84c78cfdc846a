"""Model checkpoints damaged for real (a data file Orbax wrote deleted, truncated or with a byte flipped; a NaN
parameter): `load_model` and `stvl convert export` fail with one line naming the checkpoint and the array or
tensor; export refuses non-finite tensors unless --allow-non-finite; a failed export leaves nothing that blocks
its rerun. The checksums themselves: mesh-independent, sensitive to one flipped bit."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import stvl_jax
from stvl_jax import checkpoint_integrity
from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.loading import save_model
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, flat params as numpy, checkpoint directory written by save_model)."""
    config = load_model_config("qwen3vl_tiny")
    model = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(0))
    flat = {"/".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    ckpt = tmp_path_factory.mktemp("tiny") / "ckpt"
    save_model(flat, config, ckpt)
    return config, flat, ckpt


def _copy(ckpt, tmp_path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt, dst)
    return dst


def _largest_data_file(ckpt: Path) -> Path:
    files = [p for p in (ckpt / "params").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("blocks", ["default", "tiny"])
def test_digest_is_mesh_independent_and_sees_one_bit(monkeypatch, blocks):
    from jax.sharding import NamedSharding, PartitionSpec

    import ml_dtypes

    if blocks == "tiny":  # the host path's blocks and thread-pool tasks split even these small arrays
        monkeypatch.setattr(checkpoint_integrity, "_HOST_ROWS", 1)
        monkeypatch.setattr(checkpoint_integrity, "_TASK_ROWS", 2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, 240)).astype(np.float32)
    b = x.astype(ml_dtypes.bfloat16)
    mesh = jax.make_mesh((4, 2), ("a", "b"), devices=jax.devices()[:8])
    # shards of 40 rows x 240 (offsets not multiples of the 1024-element row: read shard by shard), 2D-sharded
    # and column-sharded (assembled first), replicated
    on_mesh = {"x": jax.device_put(x, NamedSharding(mesh, PartitionSpec("a", "b"))),
               "b": jax.device_put(b, NamedSharding(mesh, PartitionSpec(None, "b"))),
               "x0": jax.device_put(x, NamedSharding(mesh, PartitionSpec("a"))),
               "r": jax.device_put(b, NamedSharding(mesh, PartitionSpec()))}
    host, _ = checkpoint_integrity.digests({"x": x, "b": b, "x0": x, "r": b})
    assert checkpoint_integrity.digests(on_mesh)[0] == host
    # the on-device program (accelerators, multi-process) on sharded arrays and the numpy reductions agree,
    # also for a size that is not a multiple of the row length and for integer/bool arrays
    odd = {"odd": rng.standard_normal(9 * 1024 + 5).astype(np.float32), "i": np.arange(7, dtype=np.int32),
           "flag": np.array([True, False, True])}
    device = jax.jit(lambda t: {k: checkpoint_integrity._device_digest_and_finite(v)[0] for k, v in t.items()})
    got = {k: "%08x%08x" % tuple(int(w) for w in d) for k, d in jax.device_get(device({**on_mesh, **odd})).items()}
    assert got == {**host, **checkpoint_integrity.digests(odd)[0]}
    for i in range(0, x.size * 32, 9973):  # single-bit flips anywhere
        y = x.copy()
        y.reshape(-1).view(np.uint32)[i // 32] ^= np.uint32(1 << (i % 32))
        assert checkpoint_integrity.digests({"x": y})[0]["x"] != host["x"]
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert checkpoint_integrity.digests({"x": swapped})[0]["x"] != host["x"]
    _, finite = checkpoint_integrity.digests({"x": np.where(x > 2, np.inf, x), "ok": x}, check_finite=True)
    assert finite == {"x": False, "ok": True}


def test_load_model_with_a_missing_data_file_is_one_line(tiny, tmp_path):
    ckpt = _copy(tiny[2], tmp_path)
    _largest_data_file(ckpt).unlink()
    with pytest.raises(CheckpointError) as e:
        stvl_jax.load_model(ckpt)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert msg.startswith(f"checkpoint {str(ckpt)!r}: array 'params/") and "missing or truncated" in msg


@pytest.mark.parametrize("name", ["_METADATA", "manifest.ocdbt"])
def test_load_model_without_orbax_metadata_is_one_line(tiny, tmp_path, name):
    ckpt = _copy(tiny[2], tmp_path)
    (ckpt / "params" / name).unlink()
    with pytest.raises(CheckpointError, match=r"params/ has no readable Orbax metadata"):
        stvl_jax.load_model(ckpt)


def test_load_model_with_a_truncated_data_file_is_one_line(tiny, tmp_path):
    ckpt = _copy(tiny[2], tmp_path)
    f = _largest_data_file(ckpt)
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"^checkpoint .*: array 'params/.*' cannot be read: its data is "
                                              r"missing or truncated$"):
        stvl_jax.load_model(ckpt)


def test_load_model_detects_a_flipped_byte(tiny, tmp_path):
    ckpt = _copy(tiny[2], tmp_path)
    _flip_middle_byte(_largest_data_file(ckpt))
    with pytest.raises(CheckpointError, match=r"array 'params/.*' does not match its checksum"):
        stvl_jax.load_model(ckpt)


def test_export_detects_a_flipped_byte_and_leaves_nothing(tiny, tmp_path, stvl):
    ckpt = _copy(tiny[2], tmp_path)
    _flip_middle_byte(_largest_data_file(ckpt))
    out = tmp_path / "hf"
    rc, _, err = stvl("export", "--ckpt", ckpt, "--out", out, "--quiet")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "does not match its checksum" in err, err
    assert not out.exists()
    rc, _, err = stvl("export", "--ckpt", ckpt, "--out", out, "--quiet", "--no-verify")
    assert rc == 0, err


def test_export_refuses_non_finite_tensors(tiny, tmp_path, stvl):
    config, flat, _ = tiny
    key = "language_model/norm/weight"
    bad = dict(flat)
    bad[key] = flat[key].copy()
    bad[key][3] = np.nan
    ckpt = save_model(bad, config, tmp_path / "nan")
    out = tmp_path / "hf"
    rc, _, err = stvl("export", "--ckpt", ckpt, "--out", out, "--quiet")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "tensor 'model.language_model.norm.weight' has 1 non-finite value(s)" in err, err
    assert not out.exists()  # no model.safetensors.tmp (or any shard) left behind
    # the rerun into the same --out is not blocked
    rc, out_text, err = stvl("export", "--ckpt", ckpt, "--out", out, "--quiet", "--allow-non-finite")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json",
                                                     "video_preprocessor_config.json"]


def test_failed_export_into_an_existing_dir_cleans_up(tiny, tmp_path, stvl):
    config, flat, _ = tiny
    bad = dict(flat, **{"language_model/norm/weight": flat["language_model/norm/weight"] * np.inf})  # written last
    ckpt = save_model(bad, config, tmp_path / "nan")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "model.safetensors.tmp").write_bytes(b"stale temporary of an interrupted export")
    rc, _, err = stvl("export", "--ckpt", ckpt, "--out", out, "--quiet", "--max-shard-size", "20KB")
    assert rc == 2 and "non-finite" in err
    assert list(out.iterdir()) == []  # the stale temporary and every shard written before the failure are gone
    (out / "model-00001-of-00009.safetensors.tmp").write_bytes(b"stale")
    rc, _, err = stvl("export", "--ckpt", tiny[2], "--out", out, "--quiet")
    assert rc == 0, err
    assert not list(out.glob("*.tmp"))
