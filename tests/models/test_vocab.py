"""Vocabulary resize: old-token logits unchanged, new rows neutral (mean), tied and untied, grow and shrink."""

import numpy as np
import pytest
from flax import nnx

from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.vocab import resize_vocab


def tiny(tie):
    from converters.qwen_vl_config import from_hf_dict
    from qwen_vl_helpers import tiny_hf_config

    return from_hf_dict(tiny_hf_config("qwen3_vl", tie=tie).to_dict())


@pytest.mark.parametrize("tie", [True, False])
def test_grow_keeps_old_logits_and_mean_initialises_new_rows(tie):
    config = tiny(tie)
    model = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(1))
    ids = np.array([[5, 9, 17, 3, 200]])
    before = np.asarray(model(input_ids=ids).logits)
    old_table = np.asarray(model.language_model.embed_tokens.embedding.get_value())
    grown = resize_vocab(model, config.text.vocab_size + 3)
    assert grown.config.text.vocab_size == config.text.vocab_size + 3
    table = np.asarray(grown.language_model.embed_tokens.embedding.get_value())
    np.testing.assert_array_equal(table[: config.text.vocab_size], old_table)
    np.testing.assert_allclose(table[-3:], np.broadcast_to(old_table.mean(0), (3, old_table.shape[1])), atol=1e-6)
    after = np.asarray(grown(input_ids=ids).logits)
    assert after.shape[-1] == config.text.vocab_size + 3
    np.testing.assert_allclose(after[..., : config.text.vocab_size], before, atol=1e-5)
    if not tie:
        head = np.asarray(grown.lm_head.kernel.get_value())
        assert head.shape == (config.text.hidden_size, config.text.vocab_size + 3)


def test_shrink_drops_trailing_rows():
    config = tiny(True)
    model = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(1))
    small = resize_vocab(model, 250)
    ids = np.array([[5, 9, 17]])
    np.testing.assert_allclose(np.asarray(small(input_ids=ids).logits),
                               np.asarray(model(input_ids=ids).logits)[..., :250], atol=1e-5)
