"""LoRA adapters (`stvl_jax.nn.lora`): the layer is x W + b + (alpha/r) x A B (hand-computed in numpy), the merged
kernel is W + (alpha/r) A B, a merged model gives the LoRA model's logits, PEFT's init, dropout only on the
adapter path and only in training, adapters sharded by the rules table, and one-line errors for bad targets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stvl_jax.errors import ConfigError
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.lora import LoRASpec, add_lora, merge_flat, set_dropout_keys
from stvl_jax.nn.params import flat_params


class _Block(nnx.Module):
    """A stand-in for one decoder layer: an attention-style output projection with (heads, head_dim) input."""

    def __init__(self, rngs):
        self.o_proj = Linear((2, 3), 5, in_axes=("heads", "head_dim"), out_axes=("embed",), use_bias=True,
                             rngs=rngs)
        self.q_proj = Linear(5, (2, 3), in_axes=("embed",), out_axes=("heads", "head_dim"), rngs=rngs)


class _Holder(nnx.Module):
    def __init__(self, rngs):
        self.language_model = nnx.Dict(layers=_Block(rngs))


def _randomize(model, seed=0, scale=0.5):
    """Random values in every parameter (fresh adapters have B = 0, which would hide A)."""
    rng = np.random.default_rng(seed)
    for _, v in flat_params(model).items():
        v.set_value(jnp.asarray(rng.normal(size=v.get_value().shape) * scale, jnp.float32))


def test_layer_is_base_plus_scaled_low_rank_product_by_hand():
    model = _Holder(nnx.Rngs(0))
    spec = LoRASpec(rank=2, alpha=3.0, targets=("o_proj", "q_proj"), modules="llm")
    add_lora(model, spec, nnx.Rngs(1))
    _randomize(model)
    blk = model.language_model["layers"]
    x = np.random.default_rng(1).normal(size=(4, 2, 3)).astype(np.float32)  # (tokens, heads, head_dim)
    w, bias = np.asarray(blk.o_proj.kernel[...]), np.asarray(blk.o_proj.bias[...])
    a, b = np.asarray(blk.o_proj.lora.a[...]), np.asarray(blk.o_proj.lora.b[...])
    assert a.shape == (2, 3, 2) and b.shape == (2, 5)
    xf = x.reshape(4, 6)
    want = xf @ w.reshape(6, 5) + bias + 1.5 * (xf @ a.reshape(6, 2)) @ b
    np.testing.assert_allclose(np.asarray(blk.o_proj(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)
    # merged kernel: W + (alpha / r) A B, element by element
    flat = {k: np.asarray(v.get_value()) for k, v in flat_params(model).items()}
    merged = merge_flat(flat, spec.scale)
    assert not any("/lora/" in k for k in merged)
    want_w = w + 1.5 * np.einsum("hdr,ro->hdo", a, b)
    np.testing.assert_allclose(merged["language_model/layers/o_proj/kernel"], want_w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(xf @ merged["language_model/layers/o_proj/kernel"].reshape(6, 5) + bias, want,
                               rtol=1e-5, atol=1e-5)
    qa, qb = np.asarray(blk.q_proj.lora.a[...]), np.asarray(blk.q_proj.lora.b[...])
    np.testing.assert_allclose(merged["language_model/layers/q_proj/kernel"],
                               np.asarray(blk.q_proj.kernel[...]) + 1.5 * np.einsum("er,rhd->ehd", qa, qb),
                               rtol=1e-6, atol=1e-6)


def test_fresh_adapter_follows_peft_init():
    """A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform_(a=sqrt(5))), B = 0: the output is unchanged."""
    lin_model = _Holder(nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5)), jnp.float32)
    before = np.asarray(lin_model.language_model["layers"].q_proj(x))
    add_lora(lin_model, LoRASpec(rank=64, alpha=8.0, targets=("q_proj",)), nnx.Rngs(3))
    q = lin_model.language_model["layers"].q_proj
    a = np.asarray(q.lora.a[...])
    bound = 1 / np.sqrt(5)
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound
    np.testing.assert_allclose(a.std(), bound / np.sqrt(3), rtol=0.15)  # uniform's std
    assert not np.asarray(q.lora.b[...]).any()
    np.testing.assert_array_equal(np.asarray(q(x)), before)


def test_dropout_acts_on_the_adapter_input_only_and_only_with_keys():
    model = _Holder(nnx.Rngs(0))
    # rank 5 = the input width, scale 1: A B (5, 6) has full row rank, so the dropped input is recoverable
    add_lora(model, LoRASpec(rank=5, alpha=5.0, dropout=0.5, targets=("q_proj",)), nnx.Rngs(1))
    q = model.language_model["layers"].q_proj
    x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 5)), jnp.float32)
    base = np.asarray(x @ q.kernel[...].reshape(5, 6)).reshape(64, 2, 3)
    set_dropout_keys(model, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(q(x)), base, atol=1e-6)  # B = 0: dropout cannot touch the base path
    _randomize(model)
    base = np.asarray(x @ q.kernel[...].reshape(5, 6)).reshape(64, 2, 3)
    dropped = np.asarray(q(x))
    q.lora.key = None  # inference: no keys, no dropout
    full = np.asarray(q(x))
    lora_full = full - base
    lora_dropped = dropped - base
    assert np.abs(lora_dropped - lora_full).max() > 1e-2
    # the adapter output with dropout is (x * m / (1 - p)) A B with m in {0, 1} per input element (p = 0.5):
    # recover x * m * 2 by least squares, then m, which must be a 0/1 mask keeping about half of the elements
    a, b = np.asarray(q.lora.a[...]), np.asarray(q.lora.b[...]).reshape(5, 6)
    ab = a @ b  # (5, 6)
    masks = np.linalg.lstsq(ab.T, (lora_dropped.reshape(64, 6)).T, rcond=None)[0].T / (2 * np.asarray(x))
    assert np.allclose(masks, np.round(masks), atol=1e-3)
    assert set(np.unique(np.round(masks))) <= {0.0, 1.0} and 0.3 < np.round(masks).mean() < 0.7


def test_rows_vmapped_over_one_model_draw_their_own_masks():
    """VIRST vmaps a batch's rows over one model: with per-row keys split by the vmap's StateAxes, two rows of
    the same input drop different elements (same key: same output); the keys match the single-key draw."""
    from stvl_jax.nn.lora import LoRAKey

    model = _Holder(nnx.Rngs(0))
    add_lora(model, LoRASpec(rank=5, alpha=5.0, dropout=0.5, targets=("q_proj",)), nnx.Rngs(1))
    _randomize(model)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 5)), jnp.float32)
    x = x.at[1].set(x[0])  # the same input in both rows
    axes = nnx.StateAxes({LoRAKey: 0, ...: None})
    run = nnx.vmap(lambda m, xi: m.language_model["layers"].q_proj(xi), in_axes=(axes, 0))
    keys = jnp.asarray([[0, 1], [0, 2]], jnp.uint32)
    set_dropout_keys(model, keys, rows=True)
    rows = np.asarray(run(model, x))
    assert np.abs(rows[0] - rows[1]).max() > 1e-2
    set_dropout_keys(model, jnp.stack([keys[1], keys[1]]), rows=True)
    same = np.asarray(run(model, x))
    np.testing.assert_array_equal(same[0], same[1])
    np.testing.assert_array_equal(same[0], rows[1])
    set_dropout_keys(model, keys[1])  # one key, no vmap: the same masks as that row
    np.testing.assert_array_equal(np.asarray(model.language_model["layers"].q_proj(x[1])), rows[1])


def test_unknown_target_and_scope_are_one_line_errors():
    model = _Holder(nnx.Rngs(0))
    with pytest.raises(ConfigError) as e:
        add_lora(model, LoRASpec(rank=2, alpha=2.0, targets=("q_proj", "qkv")), nnx.Rngs(1))
    msg = str(e.value)
    assert "\n" not in msg and "'qkv'" in msg and "o_proj" in msg and "q_proj" in msg
    with pytest.raises(ConfigError, match="lora.modules"):
        add_lora(model, LoRASpec(rank=2, alpha=2.0, modules="decoder"), nnx.Rngs(1))


@pytest.mark.parametrize("preset", ["qwen3vl_tiny", "qwen25vl_tiny"])
def test_merged_model_gives_the_lora_models_logits(preset):
    """Full model: logits of the LoRA model (adapters on every projection of LLM and ViT) == logits of the base
    model holding W + (alpha/r) A B; the adapters do change the logits (control)."""
    from stvl_jax.models.qwen_vl.inputs import ModelInputs
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
    from stvl_jax.models.qwen_vl.presets import load_model_config

    config = load_model_config(preset)
    model = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(0))
    base = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(0))
    spec = LoRASpec(rank=3, alpha=6.0, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"), modules="llm")
    add_lora(model, spec, nnx.Rngs(1))
    rng = np.random.default_rng(0)
    for k, v in flat_params(model).items():
        if "/lora/" in k:
            v.set_value(jnp.asarray(rng.normal(size=v.get_value().shape) * 0.05, jnp.float32))
    ids = jnp.asarray(rng.integers(0, 200, (2, 12)))
    inputs = ModelInputs(ids, jnp.ones((2, 12), jnp.int32), jnp.broadcast_to(jnp.arange(12), (3, 2, 12)), None)
    forward = nnx.jit(lambda m, x: m.forward(x)[0])  # one program per model, not op-by-op dispatch
    lora_logits = np.asarray(forward(model, inputs))
    base_logits = np.asarray(forward(base, inputs))
    merged = merge_flat({k: np.asarray(v.get_value()) for k, v in flat_params(model).items()}, spec.scale)
    for k, v in flat_params(base).items():
        v.set_value(jnp.asarray(merged[k]))
    merged_logits = np.asarray(forward(base, inputs))
    assert np.abs(lora_logits - base_logits).max() > 1e-2
    np.testing.assert_allclose(merged_logits, lora_logits, atol=1e-4, rtol=0)


def test_adapters_are_sharded_by_the_rules_table():
    """A/B take their kernel's logical axes plus `lora_rank` (replicated): on a (fsdp 2, tensor 2) mesh the
    input dim of A shards like the kernel's input, B's output like the kernel's output."""
    from stvl_jax.models.qwen_vl.loading import abstract_model
    from stvl_jax.models.qwen_vl.presets import load_model_config
    from stvl_jax.sharding import logical_axes_of, logical_to_spec, make_mesh

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = abstract_model(load_model_config("qwen3vl_tiny"), lora=LoRASpec(rank=4, alpha=8.0,
                                                                           targets=("q_proj", "down_proj")))
    flat = flat_params(model)

    def spec_of(k):
        v = flat[k]
        return logical_to_spec(logical_axes_of(v), v.get_value().shape, mesh)

    q = "language_model/layers/self_attn/q_proj/"
    assert tuple(spec_of(q + "kernel")) == (None, "fsdp", "tensor", None)
    assert tuple(spec_of(q + "lora/a")) == (None, "fsdp", None)
    assert tuple(spec_of(q + "lora/b")) == (None, None, "tensor", None)
    d = "language_model/layers/mlp/down_proj/"
    assert tuple(spec_of(d + "lora/a")) == (None, "tensor", None) and tuple(spec_of(d + "lora/b")) == (None, None,
                                                                                                       "fsdp")
