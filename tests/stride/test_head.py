"""STRIDE head and loss: 2-way CE at masked slots against hand-computed values, both forward-output paths,
slot positions of the second copy, vocabulary preparation."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stvl_jax.errors import ConfigError, InputError
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.models.stride.config import ARCHITECTURE, StrideConfig
from stvl_jax.models.stride.head import second_copy_positions
from stvl_jax.models.stride.model import prepare_model
from stvl_jax.train.config import LossConfig
from stvl_jax.train.losses import ForwardOutput, get_loss
from stvl_jax.train.stride_loss import stride_activation_loss

CFG = LossConfig(kind="stride_activation", stride={"label_token_ids": (3, 7)})


def _ce(l0, l1, label):
    """-log softmax([l0, l1])[label], by hand."""
    m = max(l0, l1)
    logz = m + np.log(np.exp(l0 - m) + np.exp(l1 - m))
    return logz - (l1 if label else l0)


def test_loss_is_two_way_ce_at_labelled_slots_only():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 16)).astype(np.float32)
    labels = np.array([[-100, 0, 1, -100, 1], [1, -100, -100, -100, 0]], np.int32)
    out = stride_activation_loss(jnp.asarray(logits), {"activation_labels": jnp.asarray(labels),
                                                       "labels": jnp.full((2, 5), -100)}, CFG)
    want = sum(_ce(logits[b, t, 3], logits[b, t, 7], labels[b, t]) for b in range(2) for t in range(5)
               if labels[b, t] != -100)
    np.testing.assert_allclose(float(out.total), want, rtol=1e-6)
    assert float(out.tokens) == 5
    correct = sum((logits[b, t, 7] > logits[b, t, 3]) == bool(labels[b, t]) for b in range(2) for t in range(5)
                  if labels[b, t] != -100)
    assert float(out.metrics["slot_correct"]) == correct
    assert float(out.metrics["slot_active"]) == 3


def test_forward_output_path_equals_plain_logits():
    rng = np.random.default_rng(1)
    hidden = jnp.asarray(rng.normal(size=(1, 4, 6)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
    fwd = ForwardOutput(hidden, lambda h: h @ table.T, lambda h, ids: h @ table[jnp.asarray(ids)].T)
    targets = {"activation_labels": jnp.asarray([[0, -100, 1, 1]]), "labels": jnp.full((1, 4), -100)}
    a = stride_activation_loss(fwd, targets, CFG)
    b = stride_activation_loss(hidden @ table.T, targets, CFG)
    np.testing.assert_allclose(float(a.total), float(b.total), rtol=1e-6)


def test_loss_is_selected_by_name_and_needs_the_label_ids():
    assert get_loss(CFG) is stride_activation_loss
    with pytest.raises(ConfigError, match="label_token_ids"):
        stride_activation_loss(jnp.zeros((1, 2, 16)), {"labels": jnp.zeros((1, 2), jnp.int32)},
                               LossConfig(kind="stride_activation"))
    # the trainer traces losses on a batch without STRIDE fields: zero loss, zero tokens
    out = stride_activation_loss(jnp.zeros((1, 2, 16)), {"labels": jnp.zeros((1, 2), jnp.int32)}, CFG)
    assert float(out.total) == 0 and float(out.tokens) == 0


def test_second_copy_positions_are_the_last_window_of_slot_tokens():
    cfg = StrideConfig(window=3, activation_token_id=10, active_token_id=11, inactive_token_id=12)
    ids = np.array([[1, 5, 12, 10, 11, 12, 10, 11, 2, 0]])
    np.testing.assert_array_equal(second_copy_positions(ids, cfg), [[5, 6, 7]])
    with pytest.raises(InputError, match="slot tokens"):
        second_copy_positions(np.array([[1, 12, 10, 11, 2]]), cfg)


def test_prepare_model_resizes_to_the_tokenizer_and_names_the_architecture(tok):
    config = load_model_config("qwen3vl_tiny")
    small = config.model_copy(update={"text": config.text.model_copy(update={"vocab_size": 509})})
    model = QwenVLForConditionalGeneration(small, rngs=nnx.Rngs(0))
    old = np.asarray(model.language_model.embed_tokens.embedding[...])
    model, cfg = prepare_model(model, tok, window=16)
    table = np.asarray(model.language_model.embed_tokens.embedding[...])
    assert table.shape[0] == len(tok) == 512 and model.config.architecture == ARCHITECTURE
    np.testing.assert_array_equal(table[:509], old)
    np.testing.assert_allclose(table[509:], np.broadcast_to(old.mean(0), (3, old.shape[1])), rtol=1e-5, atol=1e-6)
    assert (cfg.activation_token_id, cfg.active_token_id, cfg.inactive_token_id) == (10, 11, 12)
    assert cfg.label_token_ids == (12, 11) and cfg.window == 16
