"""`stvl_jax.load_model(hf_dir)`: an HF directory read in place (no `stvl convert import`) gives the same sharded
parameters as import + load and the same logits as transformers (fp32, 1e-4) on a 2x2x2 mesh of the 8 CPU
devices; each device's shard is cut from the memory-mapped safetensors; training starts from an HF directory;
a bad directory is one CheckpointError line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.torch

ROWS = [[("text", 4), ("image", (1, 4, 6)), ("text", 2), ("video", (2, 4, 4)), ("text", 3)],
        [("text", 3), ("image", (1, 4, 4)), ("text", 5)]]
KEY = "model.language_model.layers.1.mlp.up_proj.weight"


def _mesh():
    import stvl_jax

    return stvl_jax.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def _params(model) -> dict:
    from flax import nnx

    return {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """(family, sharded) -> (HF dir, its stvl convert import, torch model). Sharded: save_pretrained with a
    small max_shard_size (several model-0000k-of-0000n.safetensors + model.safetensors.index.json)."""
    from converters.qwen_vl_io import import_hf
    from qwen_vl_helpers import tiny_hf_config, torch_model

    cache = {}

    def get(family, sharded):
        if (family, sharded) not in cache:
            model = torch_model(tiny_hf_config(family, tie=family == "qwen3_vl"))
            hf = tmp_path_factory.mktemp(f"{family}_{'sharded' if sharded else 'single'}")
            model.save_pretrained(hf, **({"max_shard_size": "60KB"} if sharded else {}))
            ckpt = tmp_path_factory.mktemp("imported") / "c"
            import_hf(hf, ckpt, progress=False)
            cache[family, sharded] = hf, ckpt, model
        return cache[family, sharded]

    return get


@pytest.mark.parametrize("family,sharded", [("qwen3_vl", True), ("qwen2_5_vl", False)])
def test_direct_load_equals_import_and_transformers(family, sharded, hf_dirs):
    import stvl_jax
    from qwen_vl_helpers import build_batch, torch_logits

    hf, ckpt, torch_model = hf_dirs(family, sharded)
    assert (hf / "model.safetensors.index.json").is_file() == sharded
    assert len(list(hf.glob("*.safetensors"))) > 1 if sharded else len(list(hf.glob("*.safetensors"))) == 1
    mesh = _mesh()
    direct = stvl_jax.load_model(hf, mesh=mesh)
    imported = stvl_jax.load_model(ckpt, mesh=mesh)
    a, b = _params(direct), _params(imported)
    assert a.keys() == b.keys()
    for k in a:  # same values and the same placement as the imported checkpoint's
        assert a[k].sharding == b[k].sharding and a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    assert sum(not v.sharding.is_fully_replicated for v in a.values()) > 20  # really spread over the mesh

    batch = build_batch(torch_model.config, ROWS)
    real = batch["attention_mask"].astype(bool)
    ref = torch_logits(torch_model, batch)[real]
    ours = np.asarray(direct(**batch).logits)[real]
    np.testing.assert_allclose(ours, np.asarray(imported(**batch).logits)[real], atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family,sharded", [("qwen3_vl", False), ("qwen2_5_vl", True)])
def test_direct_load_single_device_and_cast(family, sharded, hf_dirs):
    import jax.numpy as jnp

    import stvl_jax

    hf, ckpt, _ = hf_dirs(family, sharded)
    for kwargs in ({}, {"param_dtype": jnp.bfloat16}):
        a, b = _params(stvl_jax.load_model(hf, **kwargs)), _params(stvl_jax.load_model(ckpt, **kwargs))
        for k in a:
            assert a[k].dtype == b[k].dtype == kwargs.get("param_dtype", jnp.float32), k
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_each_device_reads_only_its_block(hf_dirs, monkeypatch):
    """The shard reader is asked for blocks, never a whole sharded parameter, once per distinct block; and a
    transposed block is copied out of the HF matrix as just its rows and columns, not the whole tensor."""
    from converters import hf_source
    from stvl_jax.models.qwen_vl.loading import load_model

    hf, _, _ = hf_dirs("qwen3_vl", True)
    reads, copied = [], []
    read_block = hf_source.HFSource.read_block
    copy_matrix = hf_source.HFSource._copy_matrix

    def spy_read(self, path, index, dtype, device=None):
        out = read_block(self, path, index, dtype, device)
        reads.append((path, tuple(out.shape)))
        return out

    def spy_copy(self, entry, part, info, rc, out):
        copied.append((entry.ours[part], out.shape))
        return copy_matrix(self, entry, part, info, rc, out)

    monkeypatch.setattr(hf_source.HFSource, "read_block", spy_read)
    monkeypatch.setattr(hf_source.HFSource, "_copy_matrix", spy_copy)
    params = _params(load_model(hf, mesh=_mesh()))
    for path, value in params.items():
        blocks = [shape for p, shape in reads if p == path]
        shard_shapes = {tuple(s.data.shape) for s in value.addressable_shards}
        n_distinct = len({tuple((sl.start, sl.stop) for sl in s.index) for s in value.addressable_shards})
        assert len(blocks) == n_distinct and set(blocks) == shard_shapes, path
        if not value.sharding.is_fully_replicated:
            assert all(b != value.shape for b in blocks), path  # never the whole parameter
    # q_proj (L, D, H, hd) sharded over embed and heads: each layer's copy is the (H/n * hd, D/m) block of the
    # HF (H * hd, D) matrix
    path = "language_model/layers/self_attn/q_proj/kernel"
    q = params[path]
    assert not q.sharding.is_fully_replicated
    d, h, hd = q.addressable_shards[0].data.shape[1:]
    assert {shape for p, shape in copied if p == path} == {(h * hd, d)}
    assert (h * hd, d) != (q.shape[2] * q.shape[3], q.shape[1])  # not all of it


def test_read_config_and_preprocessing_slot(hf_dirs):
    from converters.qwen_vl_config import from_hf_dict
    from stvl_jax.models.qwen_vl.checkpoints import open_checkpoint, tokenizer_dir
    from stvl_jax.models.qwen_vl.loading import read_config

    hf, ckpt, _ = hf_dirs("qwen3_vl", True)
    config, info = read_config(hf)
    hf_config = json.loads((hf / "config.json").read_text())
    assert config == from_hf_dict(hf_config) == read_config(ckpt)[0]
    assert info["source"]["kind"] == "huggingface" and info["source"]["hf_config"] == hf_config
    assert info["source"] == read_config(ckpt)[1]["source"] | {"path": str(hf.absolute())}
    assert "preprocessing" in info  # None until the checkpoint-carried preprocessing config reads it
    with open_checkpoint(hf) as a, open_checkpoint(ckpt) as b:
        assert (a.kind, b.kind) == ("huggingface", "stvl-jax")
        assert a.param_specs() == b.param_specs()
    assert tokenizer_dir(hf) == str(hf) and tokenizer_dir(ckpt) == str(ckpt / "tokenizer")


@pytest.mark.parametrize("grow", [0, 8])
def test_training_starts_from_an_hf_directory(grow, hf_dirs):
    from converters.qwen_vl_config import from_hf_dict
    from stvl_jax.train.config import GROUP_NAMES
    from stvl_jax.train.init import restore_initial_params, with_vocab_size
    from stvl_jax.train.state import ModelSpec

    hf, ckpt, _ = hf_dirs("qwen3_vl", True)
    config = with_vocab_size(from_hf_dict(json.loads((hf / "config.json").read_text())),
                             256 + grow)
    spec = ModelSpec.create(config, trainable_groups=GROUP_NAMES)
    mesh = _mesh()
    a, b = restore_initial_params(spec, str(hf), mesh), restore_initial_params(spec, str(ckpt), mesh)
    assert a.keys() == b.keys() == spec.shapes().keys()
    for k in a:
        assert a[k].sharding == b[k].sharding and a[k].shape == spec.shapes()[k].shape, k
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


# ------------------------------------------------------------------------------------------ bad directories
def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


def _copy_without(src, dst, drop: str):
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    shutil.copy(src / "config.json", dst)
    save_file({k: v for k, v in load_file(src / "model.safetensors").items() if k != drop},
              dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_bad_hf_directories(hf_dirs, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from stvl_jax.errors import CheckpointError
    from stvl_jax.models.qwen_vl.loading import load_model

    hf, _, _ = hf_dirs("qwen3_vl", False)
    with pytest.raises(CheckpointError) as e:
        load_model(_copy_without(hf, tmp_path / "missing", KEY))
    assert "lacks 1 tensor" in _one_line(e) and KEY in _one_line(e)

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(hf / "config.json", wrong)
    sd = load_file(hf / "model.safetensors")
    save_file({**sd, KEY: sd[KEY][:, :60].contiguous()}, wrong / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as e:
        load_model(wrong)
    assert KEY in _one_line(e) and "(96, 60)" in _one_line(e) and "(96, 64)" in _one_line(e)

    nocfg = tmp_path / "nocfg"
    nocfg.mkdir()
    shutil.copy(hf / "model.safetensors", nocfg)
    with pytest.raises(CheckpointError) as e:
        load_model(nocfg)
    assert "config.json" in _one_line(e) and "does not exist" in _one_line(e)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(hf / "config.json", pickled)
    torch.save(dict(sd), pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as e:
        load_model(pickled)
    assert "pytorch_model.bin" in _one_line(e) and "stvl convert import" in _one_line(e)
    assert "--allow-pickle" in _one_line(e)

    (tmp_path / "neither").mkdir()
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "neither")
    assert "not an stvl-jax checkpoint" in _one_line(e) and "Hugging Face" in _one_line(e)


def test_eval_cli_reports_a_bad_hf_directory_in_one_line(hf_dirs, tmp_path, capsys):
    from stvl_jax.cli import main

    hf, _, _ = hf_dirs("qwen3_vl", False)
    bad = _copy_without(hf, tmp_path / "bad", KEY)
    capsys.readouterr()
    (tmp_path / "streamo").mkdir()  # an index that exists: the checkpoint is what fails
    (tmp_path / "streamo" / "stream_val.jsonl").write_text("{}\n")
    rc = main(["eval", "streamo", "--ckpt", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and KEY in err and "lacks 1 tensor" in err, err
