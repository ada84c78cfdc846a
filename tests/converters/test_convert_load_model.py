"""`stvl_jax.load_model` / `save_model`: placement by the rules table on a simulated 2x2x2 mesh, same logits as
one device and as transformers (fp32, 1e-4), dtype handling, save -> load identity."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch

ROWS = [[("text", 4), ("image", (1, 4, 6)), ("text", 2), ("video", (2, 4, 4)), ("text", 3)],
        [("text", 3), ("image", (1, 4, 4)), ("text", 5)]]


@pytest.fixture(scope="module")
def imported(hf_checkpoint, tmp_path_factory):
    """family -> (checkpoint dir, torch model, batch, torch logits)."""
    from converters.qwen_vl_io import import_hf
    from qwen_vl_helpers import build_batch, torch_logits

    cache = {}

    def get(family, tie):
        if (family, tie) not in cache:
            src, model = hf_checkpoint(family, tie=tie)
            ckpt = tmp_path_factory.mktemp("ckpt") / "c"
            import_hf(src, ckpt, progress=False)
            batch = build_batch(model.config, ROWS)
            cache[family, tie] = ckpt, model, batch, torch_logits(model, batch)
        return cache[family, tie]

    return get


def _real(batch, logits):
    return np.asarray(logits)[batch["attention_mask"].astype(bool)]


@pytest.mark.parametrize("family,tie", [("qwen3_vl", True), ("qwen2_5_vl", False)])
def test_mesh_matches_single_device_and_torch(family, tie, imported):
    import stvl_jax
    from flax import nnx

    from stvl_jax.sharding import logical_axes_of, logical_to_spec

    ckpt, _, batch, ref = imported(family, tie)
    single = stvl_jax.load_model(ckpt)
    assert single.mesh is None
    mesh = stvl_jax.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = stvl_jax.load_model(ckpt, mesh=mesh)
    assert sharded.mesh is mesh

    n_sharded = 0
    for path, var in nnx.to_flat_state(nnx.state(sharded, nnx.Param)):
        value = var.get_value()
        want = logical_to_spec(logical_axes_of(var), value.shape, mesh)
        assert value.sharding.mesh == mesh and value.sharding.spec == want, path
        n_sharded += any(s is not None for s in want)
    assert n_sharded > 20  # the tiny model really is spread over the mesh, not replicated

    one = np.asarray(single(**batch).logits)
    eight = np.asarray(sharded(**batch).logits)
    np.testing.assert_allclose(_real(batch, eight), _real(batch, one), atol=1e-4, rtol=0)
    np.testing.assert_allclose(_real(batch, one), _real(batch, ref), atol=1e-4, rtol=0)


def test_dtype_options(imported):
    import jax.numpy as jnp
    from flax import nnx

    from stvl_jax.models.qwen_vl.loading import load_model

    ckpt, _, batch, ref = imported("qwen3_vl", True)
    model = load_model(ckpt, dtype=jnp.bfloat16)  # compute in bf16, params stay as stored (fp32)
    dtypes = {v.get_value().dtype for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype("float32")} and model.dtype == jnp.bfloat16
    logits = model(**batch).logits
    assert logits.dtype == jnp.bfloat16
    # bf16 compute is close to, but not bit-equal with, the fp32 reference
    err = np.abs(_real(batch, np.asarray(logits, np.float32)) - _real(batch, ref)).max()
    assert 0 < err < 0.1 * np.abs(ref).max()

    cast = load_model(ckpt, param_dtype=jnp.bfloat16)
    dtypes = {v.get_value().dtype for _, v in nnx.to_flat_state(nnx.state(cast, nnx.Param))}
    assert dtypes == {jnp.dtype("bfloat16")} and cast.dtype == jnp.bfloat16  # compute follows the params


def test_save_model_from_sharded_model_roundtrips(imported, tmp_path):
    import stvl_jax
    from flax import nnx

    from stvl_jax.models.qwen_vl.loading import save_model

    ckpt, _, _, _ = imported("qwen3_vl", True)
    mesh = stvl_jax.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded = stvl_jax.load_model(ckpt, mesh=mesh)
    save_model(sharded, None, tmp_path / "again", source={"kind": "test"})
    back = stvl_jax.load_model(tmp_path / "again")
    a = dict(nnx.to_flat_state(nnx.state(sharded, nnx.Param)))
    b = dict(nnx.to_flat_state(nnx.state(back, nnx.Param)))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k].get_value()), np.asarray(b[k].get_value()), err_msg=str(k))


def test_save_model_checks_params(imported, tmp_path):
    from stvl_jax.checkpoint_io import restore_params
    from stvl_jax.errors import CheckpointError
    from stvl_jax.models.qwen_vl.loading import read_config, save_model

    ckpt, _, _, _ = imported("qwen3_vl", True)
    config, _ = read_config(ckpt)
    from stvl_jax.checkpoint_io import param_metadata

    flat = restore_params(ckpt, {k: None for k in param_metadata(ckpt)})
    flat["visual/pos_embed"] = flat["visual/pos_embed"][:3]
    with pytest.raises(CheckpointError, match=r"'visual/pos_embed' has shape \(3, 32\), the config expects \(16, 32\)"):
        save_model(flat, config, tmp_path / "bad")
    del flat["visual/pos_embed"]
    with pytest.raises(CheckpointError, match="lacks 1 parameter"):
        save_model(flat, config, tmp_path / "bad")
