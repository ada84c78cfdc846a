"""The incremental chat session equals one full forward of the concatenated conversation, and the Streamo
runner follows the protocol (turn format, sliding window with the question re-inserted, first-response stop)."""

import functools

import numpy as np
import pytest
from flax import nnx

from qwen_vl_helpers import per_frame_preprocessing
from stvl_jax.models.qwen_vl.host.preprocess import process_images
from stvl_jax.infer.session import ChatSession
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config


@functools.lru_cache(maxsize=None)
def tiny(family):
    name = {"qwen2_5_vl": "qwen25vl_tiny", "qwen3_vl": "qwen3vl_tiny"}[family]
    return QwenVLForConditionalGeneration(load_model_config(name), rngs=nnx.Rngs(3))


def vision_cfg(family):
    return per_frame_preprocessing("qwen3_vl") if family == "qwen3_vl" else per_frame_preprocessing("qwen2_5_vl")


def image_chunk(rng, family, text_before, text_after):
    size = (64, 96) if family == "qwen3_vl" else (56, 84)  # multiples of patch * merge
    frame = rng.integers(0, 255, (1, *size, 3), dtype=np.uint8)
    pv, grid = process_images(frame, vision_cfg(family), size)
    n = int(np.prod(grid)) // 4
    ids = list(rng.integers(20, 500, text_before)) + [3] + [5] * n + [4] + list(rng.integers(20, 500, text_after))
    return ids, pv, np.asarray(grid).reshape(1, 3)


# qwen2_5_vl: slow (the default suite keeps one family within its time budget)
@pytest.mark.parametrize("family", [pytest.param("qwen2_5_vl", marks=pytest.mark.slow), "qwen3_vl"])
def test_incremental_session_equals_full_forward(family):
    model = tiny(family)
    rng = np.random.default_rng(0)
    chunks = [image_chunk(rng, family, 6, 3), (list(rng.integers(20, 500, 4)), None, None),
              image_chunk(rng, family, 2, 5), image_chunk(rng, family, 1, 2)]
    session = ChatSession(model, capacity=16)  # the conversation outgrows it: the cache doubles on the way
    last = []
    for ids, pv, grid in chunks:
        last.append(session.append(ids, pixel_values=pv, image_grid_thw=grid))
    all_ids = np.concatenate([c[0] for c in chunks])[None]
    assert session.cache.capacity >= 4 * 16 and session.cache.capacity < 2 * all_ids.shape[1]
    pvs = [c[1] for c in chunks if c[1] is not None]
    grids = [c[2] for c in chunks if c[2] is not None]
    full = np.asarray(model(input_ids=all_ids, pixel_values=np.concatenate(pvs),
                            image_grid_thw=np.concatenate(grids)).logits)[0]
    ends = np.cumsum([len(c[0]) for c in chunks]) - 1
    for logits, end in zip(last, ends):
        np.testing.assert_allclose(logits, full[end], atol=1e-4)
    # greedy continuation through the cache equals teacher-forced full forwards
    gen = session.generate(stop_ids=(), max_new_tokens=4)
    ids = all_ids
    for tok in gen:
        logits = np.asarray(model(input_ids=ids, pixel_values=np.concatenate(pvs),
                                  image_grid_thw=np.concatenate(grids)).logits)[0, -1]
        assert int(np.argmax(logits)) == tok
        ids = np.concatenate([ids, [[tok]]], axis=1)


def test_chunk_ending_in_a_placeholder_is_refused():
    session = ChatSession(tiny("qwen2_5_vl"))
    with pytest.raises(ValueError, match="end with a text token"):
        session.append([7, 3, 5])


def test_sessions_share_one_compiled_step_and_see_their_own_weights():
    """The per-token step is bound to the model once per session (no per-call NNX traversal); a second model
    of the same structure reuses the compiled program but computes with its own parameters."""
    from stvl_jax.nn.bound_jit import bind_jit

    cfg = load_model_config("qwen25vl_tiny")
    a, b = (QwenVLForConditionalGeneration(cfg, rngs=nnx.Rngs(seed)) for seed in (11, 12))
    ids = list(range(20, 36))
    sa, sb = ChatSession(a), ChatSession(b)
    la = sa.append(ids)
    compiled = sa._step.func._cache_size()  # the program is process-wide: other tests may have compiled shapes
    lb = sb.append(ids)
    assert sa._step.func is sb._step.func and sb._step.func._cache_size() == compiled  # b compiled nothing
    assert not np.allclose(la, lb)
    np.testing.assert_allclose(lb, np.asarray(b(input_ids=np.asarray([ids])).logits)[0, -1], atol=1e-4)
    with pytest.raises(ValueError, match="argument 0"):
        bind_jit(lambda m, x: x, a, static_argnums=(0,))
