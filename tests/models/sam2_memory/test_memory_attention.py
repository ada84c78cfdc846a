"""Memory attention parity vs transformers' `Sam2VideoMemoryAttention` (fp32, random weights, two shapes),
with object-pointer tokens in the memory (excluded from RoPE), and the masked fixed-capacity form."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from flax import nnx  # noqa: E402

from converters.sam2_video_keys import flat_to_hf, memory_attention_keys  # noqa: E402
from stvl_jax.models.sam2.memory_attention import MemoryAttention  # noqa: E402
from stvl_jax.models.sam2.memory_config import MemoryAttentionConfig  # noqa: E402
from stvl_jax.models.sam2.rope_axial import axial_rope_cos_sin  # noqa: E402
from stvl_jax.nn.params import flat_params  # noqa: E402
from sam2_memory_helpers import SHAPES, build_loaded, jitted, state_numpy, tiny_hf_config, tiny_hf_model  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module", params=[(s, scan) for s in sorted(SHAPES) for scan in (True, False)],
                ids=lambda p: f"{p[0]}-{'scan' if p[1] else 'unrolled'}")
def pair(request):
    shape, scan = request.param  # both layer loops: lax.scan and unrolled (`scan_layers`)
    hf_cfg = tiny_hf_config(shape)
    hf = tiny_hf_model(hf_cfg, seed=2).memory_attention
    cfg = MemoryAttentionConfig.from_hf(hf_cfg.to_dict())
    ours = build_loaded(lambda: MemoryAttention(cfg, scan_layers=scan, rngs=nnx.Rngs(0)),
                        memory_attention_keys(cfg, "", ""),
                        state_numpy(hf))
    return shape, cfg, hf, ours


def _inputs(cfg, n_tokens, frames, pointers, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    m = frames * n_tokens + pointers
    return f(batch, n_tokens, cfg.hidden_size), f(batch, n_tokens, cfg.hidden_size), f(batch, m, cfg.kv_in_dim), \
        f(batch, m, cfg.kv_in_dim)


def _reference(hf, feats, pos, memory, memory_pos, pointers):
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(1, 0, 2)))  # noqa: E731  (seq-first)
    with torch.no_grad():
        out = hf(current_vision_features=t(feats), memory=t(memory), current_vision_position_embeddings=t(pos),
                 memory_posision_embeddings=t(memory_pos), num_object_pointer_tokens=pointers)
    return out.numpy()[0]  # (1, B, N, C): HF keeps a point-batch axis of 1 in front


@pytest.mark.parametrize("frames, pointers", [(1, 0), (3, 8)])
def test_forward_matches_transformers(pair, frames, pointers):
    shape, cfg, hf, ours = pair
    h, w = SHAPES[shape]["grid"]
    feats, pos, memory, memory_pos = _inputs(cfg, h * w, frames, pointers)
    ref = _reference(hf, feats, pos, memory, memory_pos, pointers)
    got = np.asarray(jitted(ours, num_object_pointer_tokens=pointers)(feats, memory, pos, memory_pos))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)


def test_pointer_tokens_really_skip_rope(pair):
    """Counting the pointer tokens as spatial ones changes the output: the exclusion is exercised."""
    shape, cfg, hf, ours = pair
    h, w = SHAPES[shape]["grid"]
    feats, pos, memory, memory_pos = _inputs(cfg, h * w, 2, h * w, seed=3)
    right = _reference(hf, feats, pos, memory, memory_pos, h * w)
    wrong = np.asarray(jitted(ours)(feats, memory, pos, memory_pos))
    assert np.abs(right - wrong).max() > 100 * TOL


def test_masked_capacity_equals_the_real_memory(pair):
    """A fixed-capacity memory (extra garbage frames and pointer slots, masked out) gives what transformers gives
    on the real tokens alone: what a jitted tracker with a static bank relies on."""
    shape, cfg, hf, ours = pair
    h, w = SHAPES[shape]["grid"]
    n = h * w
    feats, pos, memory, memory_pos = _inputs(cfg, n, 2, 4, seed=4)
    ref = _reference(hf, feats, pos, memory, memory_pos, 4)
    rng = np.random.default_rng(5)
    # capacity: 4 frames, 12 pointer tokens; real frames in slots 1 and 3, real pointers at slots 2..5
    cap_mem = rng.normal(size=(2, 4 * n + 12, cfg.kv_in_dim)).astype(np.float32) * 5
    cap_pos = rng.normal(size=cap_mem.shape).astype(np.float32)
    valid = np.zeros(cap_mem.shape[:2], bool)
    for real, slot in ((0, 1), (1, 3)):
        cap_mem[:, slot * n:(slot + 1) * n] = memory[:, real * n:(real + 1) * n]
        cap_pos[:, slot * n:(slot + 1) * n] = memory_pos[:, real * n:(real + 1) * n]
        valid[:, slot * n:(slot + 1) * n] = True
    cap_mem[:, 4 * n + 2:4 * n + 6], cap_pos[:, 4 * n + 2:4 * n + 6] = memory[:, 2 * n:], memory_pos[:, 2 * n:]
    valid[:, 4 * n + 2:4 * n + 6] = True
    got = np.asarray(jitted(ours, num_object_pointer_tokens=12, memory_mask=valid)(feats, cap_mem, pos, cap_pos))
    np.testing.assert_allclose(got, ref, atol=TOL, rtol=0)


def test_rope_table_matches_transformers(pair):
    _, cfg, hf, _ = pair
    with torch.no_grad():
        cos, sin = hf.rotary_emb(torch.zeros(1), hf.position_ids)
    ours_cos, ours_sin = axial_rope_cos_sin(cfg.rope_feat_sizes, cfg.head_dim, cfg.rope_theta)
    np.testing.assert_allclose(ours_cos, cos.numpy()[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours_sin, sin.numpy()[0], atol=1e-6, rtol=0)


def test_key_map_round_trip(pair):
    _, cfg, hf, ours = pair
    ref = state_numpy(hf)
    params = {k: np.asarray(v.get_value()) for k, v in flat_params(ours).items()}
    back = flat_to_hf(memory_attention_keys(cfg, "", ""), params.__getitem__)
    assert sorted(back) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k], err_msg=k)


def test_grid_mismatch_is_one_clear_error(pair):
    _, cfg, _, ours = pair
    feats = np.zeros((1, 5, cfg.hidden_size), np.float32)
    mem = np.zeros((1, 5, cfg.kv_in_dim), np.float32)
    with pytest.raises(ValueError, match="rope_feat_sizes"):
        ours(feats, mem, None, mem)


def test_training_dropout(pair):
    """With a key: dropout as configured (reproducible per key, changes the output); the training path's own
    attention (weights dropout) with zero rates is the inference forward."""
    import jax

    shape, cfg, hf, ours = pair
    h, w = SHAPES[shape]["grid"]
    feats, pos, memory, memory_pos = _inputs(cfg, h * w, 2, 4, seed=6)
    mask = np.ones(memory.shape[:2], bool)
    mask[:, 3:9] = False
    plain = np.asarray(jitted(ours, num_object_pointer_tokens=4, memory_mask=mask)(feats, memory, pos, memory_pos))
    key = jax.random.key(0)
    train = jitted(ours, num_object_pointer_tokens=4, memory_mask=mask, dropout_rng=key)
    a, b = (np.asarray(train(feats, memory, pos, memory_pos)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - plain).max() > 1e-2
    no_drop = cfg.replace(dropout=0.0, rope_dropout=0.0)
    zero = build_loaded(lambda: MemoryAttention(no_drop, rngs=nnx.Rngs(0)), memory_attention_keys(no_drop, "", ""),
                        state_numpy(hf))
    got = jitted(zero, num_object_pointer_tokens=4, memory_mask=mask, dropout_rng=key)(feats, memory, pos, memory_pos)
    np.testing.assert_allclose(np.asarray(got), plain, atol=TOL, rtol=0)
