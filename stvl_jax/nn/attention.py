"""Attention kernels in plain JAX: grouped-query dot-product attention, packed-segment attention.

`dot_product_attention` never materialises repeated K/V heads (queries are grouped per KV head). Softmax is in
fp32. Masked logits are set to the fp32 minimum, so a fully masked row (a padding query) becomes a uniform
average — the same thing PyTorch's additive-mask eager attention computes — instead of NaN.

`segment_attention` is how the vision towers attend within frames (Qwen3-VL) or windows (Qwen2.5-VL): the host
computes a `SegmentLayout` that packs each segment's rows into a (num_segments, block_len) grid, so the cost is
sum(len_s^2) rather than N^2 — window attention with segment ids, no Python loop over windows.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from stvl_jax.nn.shapes import bucket

_MASK_VALUE = float(np.finfo(np.float32).min)


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, scale: float, precision=None
) -> jax.Array:
    """q: (B, Lq, H, D); k, v: (B, Lk, KV, D) with H % KV == 0; mask: bool, broadcastable to (B, Lq, Lk),
    True = attend. Returns (B, Lq, H, D) in q's dtype."""
    b, lq, h, d = q.shape
    kv = k.shape[2]
    if h % kv:
        raise ValueError(f"{h} query heads are not a multiple of {kv} key/value heads")
    qg = q.reshape(b, lq, kv, h // kv, d)
    logits = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, precision=precision, preferred_element_type=jnp.float32)
    logits = logits * scale
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, lq, k.shape[1]))[:, None, None]
        logits = jnp.where(mask, logits, _MASK_VALUE)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v, precision=precision)
    return out.reshape(b, lq, h, d)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SegmentLayout:
    """Rows of a packed (N, ...) sequence grouped into segments that attend only within themselves.

    gather: (S, Lb) int32 — row index of each slot (padding slots point at row 0);
    valid:  (S, Lb) bool  — slot holds a real row;
    scatter: (N,) int32   — flat slot index (into S * Lb) of each row (rows in no segment point at slot 0).
    """

    gather: jax.Array
    valid: jax.Array
    scatter: jax.Array

    @staticmethod
    def from_segment_ids(segment_ids: np.ndarray, block_multiple: int = 1, bucket_segments: bool = False
                         ) -> "SegmentLayout":
        """Host-side: build the layout from per-row segment ids (rows with id < 0 belong to no segment).

        Rows of one segment need not be contiguous; their order within the segment is preserved.
        `block_multiple` rounds the block length up and `bucket_segments` pads the number of segments to a
        bucket size with empty segments (fewer distinct shapes to compile).
        """
        segment_ids = np.asarray(segment_ids)
        n = segment_ids.shape[0]
        real = segment_ids >= 0
        uniq, inverse, counts = np.unique(segment_ids[real], return_inverse=True, return_counts=True)
        num_seg = max(len(uniq), 1)
        if bucket_segments:
            num_seg = bucket(num_seg, minimum=4)
        block = int(counts.max()) if len(counts) else 1
        block = -(-block // block_multiple) * block_multiple
        gather = np.zeros((num_seg, block), np.int32)
        valid = np.zeros((num_seg, block), bool)
        scatter = np.zeros((n,), np.int32)
        rows = np.nonzero(real)[0]
        # stable position of each row within its segment
        order = np.argsort(inverse, kind="stable")
        seg_sorted = inverse[order]
        starts = np.searchsorted(seg_sorted, np.arange(len(uniq)))
        pos_sorted = np.arange(len(order)) - starts[seg_sorted]
        seg_of = seg_sorted
        row_of = rows[order]
        gather[seg_of, pos_sorted] = row_of
        valid[seg_of, pos_sorted] = True
        scatter[row_of] = seg_of * block + pos_sorted
        return SegmentLayout(gather, valid, scatter)


def segment_attention(q: jax.Array, k: jax.Array, v: jax.Array, layout: SegmentLayout, *, scale: float,
                      precision=None) -> jax.Array:
    """q, k, v: (N, H, D) -> (N, H, D), each row attending to the rows of its own segment (bidirectional)."""
    n, h, d = q.shape
    s, lb = layout.gather.shape
    qs, ks, vs = (x[layout.gather] for x in (q, k, v))  # (S, Lb, H, D)
    mask = layout.valid[:, None, :]  # keys valid, (S, 1, Lb)
    out = dot_product_attention(qs, ks, vs, mask, scale=scale, precision=precision)
    return out.reshape(s * lb, h, d)[layout.scatter]


def causal_padding_mask(query_pos: jax.Array, key_pos: jax.Array, key_valid: jax.Array) -> jax.Array:
    """Mask for a causal decoder over (possibly cached) keys.

    query_pos: (B, Lq) or (Lq,) index of each query in the sequence; key_pos: (Lk,) index of each key slot;
    key_valid: (B, Lk) bool (False for padding / unwritten cache slots). Returns (B, Lq, Lk) bool.
    """
    query_pos = jnp.atleast_2d(query_pos)
    causal = key_pos[None, None, :] <= query_pos[:, :, None]
    return causal & key_valid[:, None, :]
