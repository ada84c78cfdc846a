"""HF (transformers' save_pretrained) -> `stvl convert import` -> Orbax -> `stvl convert export` -> HF:
every tensor bit-exact under its original name, and `from_pretrained` loads the export with identical logits."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

pytestmark = pytest.mark.torch

ROWS = [[("text", 4), ("image", (1, 4, 6)), ("text", 2), ("video", (2, 4, 4)), ("text", 3)], [("text", 6)]]


def read_hf(directory):
    """{name: torch tensor} of every *.safetensors file, read by the safetensors library itself."""
    from safetensors import safe_open

    out = {}
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for k in st.keys():
                assert k not in out, k
                out[k] = st.get_tensor(k)
    return out


def assert_same_tensors(a: dict, b: dict):
    import torch

    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def from_pretrained(directory):
    import transformers

    cls = getattr(transformers, json.loads((directory / "config.json").read_text())["architectures"][0])
    return cls.from_pretrained(directory, attn_implementation="eager").eval()


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_roundtrip_bit_exact_and_loadable(family, tie, hf_checkpoint, stvl, tmp_path):
    from qwen_vl_helpers import build_batch, torch_logits

    src, model = hf_checkpoint(family, tie=tie)
    rc, out, err = stvl("import", "--hf", src, "--out", tmp_path / "ckpt", "--quiet")
    assert rc == 0, err
    rc, out, err = stvl("export", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf", "--quiet")
    assert rc == 0, err

    original, exported = read_hf(src), read_hf(tmp_path / "hf")
    assert ("lm_head.weight" in exported) == (not tie)  # tied: HF re-ties on load
    assert_same_tensors(original, exported)  # same names as save_pretrained writes, bit-exact
    assert json.loads((tmp_path / "hf" / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    assert (tmp_path / "hf" / "generation_config.json").exists()

    reloaded = from_pretrained(tmp_path / "hf")
    batch = build_batch(model.config, ROWS)
    np.testing.assert_array_equal(torch_logits(reloaded, batch), torch_logits(model, batch))


def test_bf16_stays_bf16(hf_checkpoint, stvl, tmp_path):
    import torch

    from stvl_jax.checkpoint_io import param_metadata

    src, _ = hf_checkpoint("qwen3_vl", tie=False, dtype=torch.bfloat16)
    assert {t.dtype for t in read_hf(src).values()} == {torch.bfloat16}
    assert stvl("import", "--hf", src, "--out", tmp_path / "bf16", "--quiet")[0] == 0
    assert {str(d) for _, d in param_metadata(tmp_path / "bf16").values()} == {"bfloat16"}
    assert stvl("export", "--ckpt", tmp_path / "bf16", "--out", tmp_path / "hf", "--quiet")[0] == 0
    assert_same_tensors(read_hf(src), read_hf(tmp_path / "hf"))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"

    # bf16 -> fp32 is exact, so importing as fp32 and exporting as bf16 must reproduce the bits too
    assert stvl("import", "--hf", src, "--out", tmp_path / "fp32", "--dtype", "float32", "--quiet")[0] == 0
    assert {str(d) for _, d in param_metadata(tmp_path / "fp32").values()} == {"float32"}
    assert stvl("export", "--ckpt", tmp_path / "fp32", "--out", tmp_path / "hf2", "--dtype", "bf16", "--quiet")[0] == 0
    assert_same_tensors(read_hf(src), read_hf(tmp_path / "hf2"))


def test_mixed_dtypes_are_kept_per_tensor(hf_checkpoint, stvl, tmp_path):
    """bf16 weights with fp32 norms: each tensor keeps its dtype; the nominal dtype is the majority's."""
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from safetensors.torch import save_file

    from stvl_jax.models.qwen_vl.loading import load_model

    src, _ = hf_checkpoint("qwen3_vl", tie=True, dtype=torch.bfloat16)
    mixed = {k: (v.float() if v.ndim == 1 else v) for k, v in read_hf(src).items()}
    (tmp_path / "mixed").mkdir()
    save_file(mixed, tmp_path / "mixed" / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "mixed" / "config.json").write_text((src / "config.json").read_text())
    assert stvl("import", "--hf", tmp_path / "mixed", "--out", tmp_path / "c", "--quiet")[0] == 0
    model = load_model(tmp_path / "c")
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert model.dtype == jnp.bfloat16
    assert params[("language_model", "norm", "weight")].get_value().dtype == jnp.float32
    assert params[("language_model", "layers", "mlp", "up_proj", "kernel")].get_value().dtype == jnp.bfloat16
    assert stvl("export", "--ckpt", tmp_path / "c", "--out", tmp_path / "hf", "--quiet")[0] == 0
    assert_same_tensors(mixed, read_hf(tmp_path / "hf"))
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"


def test_sharded_input_and_output(hf_checkpoint, stvl, tmp_path):
    src, model = hf_checkpoint("qwen2_5_vl", tie=False, max_shard_size="60KB")
    assert len(list(src.glob("*.safetensors"))) > 2 and (src / "model.safetensors.index.json").exists()
    assert stvl("import", "--hf", src, "--out", tmp_path / "ckpt", "--quiet")[0] == 0
    rc, out, err = stvl("export", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf", "--max-shard-size", "60KB",
                        "--quiet")
    assert rc == 0, err
    shards = sorted((tmp_path / "hf").glob("*.safetensors"))
    assert len(shards) > 2
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f.name for f in shards}
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in read_hf(src).values())
    for f in shards:  # each shard within the limit unless it holds a single larger tensor
        assert f.stat().st_size <= 60_000 + 4096 or list(index["weight_map"].values()).count(f.name) == 1
    assert_same_tensors(read_hf(src), read_hf(tmp_path / "hf"))
    reloaded = from_pretrained(tmp_path / "hf")
    assert_same_tensors(model.state_dict(), reloaded.state_dict())


def test_qwen25_module_names(hf_checkpoint, stvl, tmp_path):
    """transformers-5 module names (`model.language_model.*`, `model.visual.*`) import to the same params as the
    hub names save_pretrained writes, and `--names module` exports them in a form from_pretrained loads."""
    from safetensors.torch import save_file

    from stvl_jax.checkpoint_io import restore_params

    src, model = hf_checkpoint("qwen2_5_vl", tie=False)
    legacy = read_hf(src)
    assert any(k.startswith("visual.") for k in legacy)  # what transformers 5.23 writes for Qwen2.5-VL
    module = {("model." + k if k.startswith("visual.") else k.replace("model.", "model.language_model.", 1)
               if k.startswith("model.") else k): v for k, v in legacy.items()}
    (tmp_path / "mod").mkdir()
    save_file(module, tmp_path / "mod" / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "mod" / "config.json").write_text((src / "config.json").read_text())

    assert stvl("import", "--hf", src, "--out", tmp_path / "a", "--quiet")[0] == 0
    assert stvl("import", "--hf", tmp_path / "mod", "--out", tmp_path / "b", "--quiet")[0] == 0
    a = restore_params(tmp_path / "a", {k: None for k in _param_keys(tmp_path / "a")})
    b = restore_params(tmp_path / "b", {k: None for k in _param_keys(tmp_path / "b")})
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    assert stvl("export", "--ckpt", tmp_path / "b", "--out", tmp_path / "hf", "--names", "module", "--quiet")[0] == 0
    assert_same_tensors(module, read_hf(tmp_path / "hf"))
    assert_same_tensors(model.state_dict(), from_pretrained(tmp_path / "hf").state_dict())
    assert stvl("export", "--ckpt", tmp_path / "b", "--out", tmp_path / "hf2", "--legacy-names", "--quiet")[0] == 0
    assert_same_tensors(legacy, read_hf(tmp_path / "hf2"))


def _param_keys(ckpt):
    from stvl_jax.checkpoint_io import param_metadata

    return param_metadata(ckpt).keys()


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_export_of_a_model_saved_without_hf_source(family, hf_checkpoint, stvl, tmp_path):
    """save_model(nnx model) has no HF config to copy: export writes config.json from the QwenVLConfig."""
    from qwen_vl_helpers import our_model_from_torch

    from stvl_jax.models.qwen_vl.loading import save_model

    src, model = hf_checkpoint(family, tie=False)
    save_model(our_model_from_torch(model), None, tmp_path / "ckpt")
    assert stvl("export", "--ckpt", tmp_path / "ckpt", "--out", tmp_path / "hf", "--quiet")[0] == 0
    assert not (tmp_path / "hf" / "generation_config.json").exists()
    assert_same_tensors(read_hf(src), read_hf(tmp_path / "hf"))
    reloaded = from_pretrained(tmp_path / "hf")
    assert_same_tensors(model.state_dict(), reloaded.state_dict())
    for key in ("text_config", "vision_config"):  # the architecture fields survive the rewrite
        for field, value in model.config.to_dict()[key].items():
            if field in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "head_dim", "depth",
                         "deepstack_visual_indexes", "num_position_embeddings", "rope_parameters", "patch_size",
                         "window_size", "fullatt_block_indexes", "tokens_per_second", "rms_norm_eps"):
                assert reloaded.config.to_dict()[key][field] == value, (key, field)


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ("touch pwned_by_pickle",)


def test_pickle_refused_by_default_and_weights_only_with_flag(hf_checkpoint, stvl, tmp_path, monkeypatch):
    import torch

    from stvl_jax.checkpoint_io import restore_params

    src, model = hf_checkpoint("qwen3_vl", tie=True)
    d = tmp_path / "bin"
    d.mkdir()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    (d / "config.json").write_text((src / "config.json").read_text())

    rc, _, err = stvl("import", "--hf", d, "--out", tmp_path / "x", "--quiet")
    assert rc == 2 and "pytorch_model.bin" in err and "--allow-pickle" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()

    rc, _, err = stvl("inspect", d)
    assert rc == 2 and "--allow-pickle" in err
    rc, out, _ = stvl("inspect", d, "--allow-pickle")
    assert rc == 0 and "embed_tokens.weight" in out and "lm_head.weight" in out  # state_dict() keeps the tied head

    assert stvl("import", "--hf", d, "--out", tmp_path / "p", "--allow-pickle", "--quiet")[0] == 0
    assert stvl("import", "--hf", src, "--out", tmp_path / "s", "--quiet")[0] == 0
    keys = list(_param_keys(tmp_path / "s"))
    p, s = (restore_params(tmp_path / n, {k: None for k in keys}) for n in ("p", "s"))
    assert all(np.array_equal(p[k], s[k]) for k in keys)

    # a pickle that would run code is refused even with the flag (weights_only=True), and nothing runs
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((src / "config.json").read_text())
    with open(evil / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    monkeypatch.chdir(tmp_path)
    rc, _, err = stvl("import", "--hf", evil, "--out", tmp_path / "e", "--allow-pickle", "--quiet")
    assert rc == 2 and "weights_only=True" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pwned_by_pickle").exists()
