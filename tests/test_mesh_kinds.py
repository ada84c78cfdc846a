"""A mesh built the plain JAX way (`jax.make_mesh`, Explicit axis types by default) works wherever a mesh is taken,
like the Auto mesh of `stvl_jax.make_mesh`: load_model + forward (logits == one device, fp32 1e-4), generate
(ids == one device), place_on_mesh. The train step on both kinds: tests/train/test_mesh_kinds.py."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType

import stvl_jax
from converters.verify import synthetic_batch
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.sharding import make_mesh

NAMES = ("data", "fsdp", "tensor")


def mesh_of(kind: str, shape=(2, 2, 2)):
    if kind == "explicit":  # exactly what a JAX user writes; assert it really is the Explicit kind
        mesh = jax.make_mesh(shape, NAMES)
        assert set(mesh.axis_types) == {AxisType.Explicit}
        return mesh
    mesh = make_mesh(dict(zip(NAMES, shape)))
    assert set(mesh.axis_types) == {AxisType.Auto}
    return mesh


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(checkpoint of a random tiny Qwen3-VL, untied: a tied random model echoes its input token; a batch,
    single-device logits and greedy ids)."""
    config = load_model_config("qwen3vl_tiny").model_copy(update={"tie_word_embeddings": False})
    model = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var.get_value()
        if value.ndim >= 2:  # a sharper random model: its greedy tokens are not all the same
            var.set_value(jax.numpy.asarray(rng.normal(0.0, 0.2, value.shape), value.dtype))
    ckpt = tmp_path_factory.mktemp("tiny") / "ckpt"
    stvl_jax.save_model(model, None, ckpt)
    batch = synthetic_batch(config)
    single = stvl_jax.load_model(ckpt)
    ids = stvl_jax.generate(single, batch, max_new_tokens=6, eos_token_id=())
    assert len(set(ids.ravel().tolist())) > 3, "degenerate test: the random model repeats one token"
    return ckpt, batch, np.asarray(single(**batch).logits), ids


@pytest.mark.parametrize("kind", ["explicit", "auto"])
def test_load_forward_generate_on_both_mesh_kinds(kind, tiny):
    ckpt, batch, ref_logits, ref_ids = tiny
    mesh = mesh_of(kind)
    model = stvl_jax.load_model(ckpt, mesh=mesh)
    kernel = model.language_model.layers.mlp.up_proj.kernel.get_value()
    assert len(kernel.sharding.device_set) == 8 and kernel.sharding.spec[1:] == ("fsdp", "tensor")
    logits = model(**batch).logits
    assert len(logits.sharding.device_set) == 8
    mask = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(logits)[mask], ref_logits[mask], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(stvl_jax.generate(model, batch, max_new_tokens=6, eos_token_id=()), ref_ids)


def test_place_on_mesh_accepts_an_explicit_mesh(tiny):
    from stvl_jax.sharding import place_on_mesh

    ckpt, batch, ref_logits, _ = tiny
    model = place_on_mesh(stvl_jax.load_model(ckpt), mesh_of("explicit"))
    mask = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(model(**batch).logits)[mask], ref_logits[mask], atol=1e-4, rtol=0)
