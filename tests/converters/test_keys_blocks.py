"""`qwen_vl_keys.to_ours` with a block index (how `load_model` reads a device's shard of an HF tensor) equals the
same block of the whole conversion, for every hook, contiguous blocks (the tiled-transpose path) and not (the
fallback), with a cast."""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np
import pytest

from converters.qwen_vl_keys import CONV3D, LINEAR, VECTOR, to_ours

CASES = [  # hook, HF shape, our shapes (one per part)
    (LINEAR, (6 * 4, 10), ((10, 6, 4),)),  # q_proj: (H*hd, D) -> (D, H, hd)
    (LINEAR, (10, 6 * 4), ((6, 4, 10),)),  # o_proj: (D, H*hd) -> (H, hd, D)
    (CONV3D, (8, 3, 2, 2, 2), ((24, 8),)),  # patch embedding
    (VECTOR, (6 * 4,), ((6, 4),)),  # bias
    ("split3:" + LINEAR, (3 * 12, 12), ((12, 3, 4),) * 3),  # fused qkv
    ("split3:" + VECTOR, (3 * 12,), ((3, 4),) * 3),
]


def _blocks(shape):
    """Every block made of halves / whole / single-index ranges per dimension."""
    options = [[slice(None), slice(0, n // 2 or 1), slice(n // 2, n), slice(1, 2) if n > 1 else slice(0, 1)]
               for n in shape]
    return list(itertools.product(*options))


@pytest.mark.parametrize("hook,hf_shape,our_shapes", CASES)
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_block_equals_block_of_the_whole(hook, hf_shape, our_shapes, dtype):
    rng = np.random.default_rng(0)
    hf = rng.standard_normal(hf_shape).astype(dtype)
    whole = to_ours(hook, hf, our_shapes)
    for index in _blocks(our_shapes[0]):
        got = to_ours(hook, hf, our_shapes, index=index)
        for g, w in zip(got, whole):
            np.testing.assert_array_equal(g, w[index], err_msg=str(index))
        cast = to_ours(hook, hf, our_shapes, outs=[np.empty(w[index].shape, np.float32) for w in whole],
                       index=index)
        for g, w in zip(cast, whole):
            np.testing.assert_array_equal(g, w[index].astype(np.float32))


def test_whole_conversion_is_the_reference_layout():
    """The hooks themselves, against numpy written out by hand: Linear = transpose then split of the out axis."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6 * 4, 10)).astype(np.float32)
    (ours,) = to_ours(LINEAR, w, ((10, 6, 4),))
    np.testing.assert_array_equal(ours, w.T.reshape(10, 6, 4))
    conv = rng.standard_normal((8, 3, 2, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(to_ours(CONV3D, conv, ((24, 8),))[0], conv.reshape(8, 24).T)
    qkv = rng.standard_normal((36, 12)).astype(np.float32)
    q, k, v = to_ours("split3:" + LINEAR, qkv, ((12, 3, 4),) * 3)
    np.testing.assert_array_equal(k, qkv[12:24].T.reshape(12, 3, 4))


def test_bad_index_is_refused():
    with pytest.raises(ValueError, match="not a block"):
        to_ours(LINEAR, np.zeros((4, 4)), ((4, 4),), index=(slice(0, 4, 2), slice(None)))
