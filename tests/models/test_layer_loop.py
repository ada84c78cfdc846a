"""`scan_layers=False` (the layer loop unrolled, `model.scan_layers` in training configs) is the same model as the
default scan: same logits as transformers, same gradients, and really no loop in the compiled program."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qwen_vl_helpers import build_batch, our_model_from_torch, tiny_hf_config, torch_logits, torch_model

pytestmark = pytest.mark.torch

ROWS = [[("text", 3), ("video", (2, 4, 4)), ("text", 2), ("image", (1, 4, 6)), ("text", 2)], [("text", 6)]]


@functools.lru_cache(maxsize=None)
def _models(family):
    cfg = tiny_hf_config(family)
    tm = torch_model(cfg)
    return cfg, tm, our_model_from_torch(tm), our_model_from_torch(tm, scan_layers=False)


# qwen2_5_vl runs the same loop code (slow: the default suite keeps one family)
@pytest.mark.parametrize("family", ["qwen3_vl", pytest.param("qwen2_5_vl", marks=pytest.mark.slow)])
def test_unrolled_layers_match_transformers_and_the_scan(family):
    cfg, tm, scanned, unrolled = _models(family)
    assert unrolled.language_model.scan_layers is False and unrolled.visual.scan_layers is False
    batch = build_batch(cfg, ROWS)
    valid = batch["attention_mask"].astype(bool)
    out = np.asarray(unrolled(**batch).logits)
    assert np.abs(out - torch_logits(tm, batch))[valid].max() < 1e-4
    assert np.abs(out - np.asarray(scanned(**batch).logits))[valid].max() < 1e-5

    def loss(model):
        return jnp.mean(model(**batch).logits[jnp.asarray(valid)] ** 2)

    g_scan, g_unrolled = (nnx.to_flat_state(nnx.grad(loss)(m)) for m in (scanned, unrolled))
    for (path, a), (_, b) in zip(g_scan, g_unrolled, strict=True):
        np.testing.assert_allclose(np.asarray(b.get_value()), np.asarray(a.get_value()), rtol=1e-4, atol=1e-7,
                                   err_msg=str(path))


def test_unrolled_program_has_no_layer_loop():
    cfg, _, scanned, unrolled = _models("qwen3_vl")
    batch = build_batch(cfg, [[("text", 3), ("video", (2, 4, 4)), ("text", 2)]])

    def hlo(model):
        return jax.jit(lambda: model(**batch).logits).lower().as_text()

    assert "stablehlo.while" in hlo(scanned)
    assert "stablehlo.while" not in hlo(unrolled)


def test_training_config_carries_scan_layers():
    from stvl_jax.nn.params import flat_params
    from stvl_jax.train.config import ModelSection
    from stvl_jax.train.state import ModelSpec

    assert ModelSection(config="qwen3vl_tiny").scan_layers is True
    cfg, _, scanned, _ = _models("qwen3_vl")
    spec = ModelSpec.create(scanned.config, trainable_groups=("llm",), scan_layers=False)
    model = spec.merge({k: v.get_value() for k, v in flat_params(scanned).items()})
    assert model.language_model.scan_layers is False and model.visual.scan_layers is False
