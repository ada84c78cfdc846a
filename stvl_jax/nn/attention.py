"""Attention kernels in plain JAX: grouped-query dot-product attention, packed-segment attention.

`dot_product_attention` never materialises repeated K/V heads (queries are grouped per KV head). Softmax is in
fp32. Masked logits are set to the fp32 minimum, so a fully masked row (a padding query) becomes a uniform
average — the same thing PyTorch's additive-mask eager attention computes — instead of NaN.

`segment_attention` is how the vision towers attend within frames (Qwen3-VL) or windows (Qwen2.5-VL): the host
computes a `SegmentLayout` that packs each segment's rows into a (num_segments, block_len) grid, so the cost is
sum(len_s^2) rather than N^2 — window attention with segment ids, no Python loop over windows. When the
segments are equally long and tile the leading rows in order (the frames of one video, or of equally sized
images), the layout records it (`dense_segments`, static) and the rows are reshaped instead of gathered and
scattered: no gather/scatter, no key mask, the same arithmetic.
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
    # heads in front of the sequence on the small q/k/v operands, so that neither dot nor its backward
    # transposes the large (B, KV, G, Lq, Lk) matrix (measured: research/notes/jax_vs_torch.md)
    qg = jnp.transpose(q.reshape(b, lq, kv, h // kv, d), (0, 2, 3, 1, 4))  # (b, kv, g, q, d)
    kt, vt = (jnp.transpose(x, (0, 2, 1, 3)) for x in (k, v))  # (b, kv, s, d)
    logits = jnp.einsum("bkgqd,bksd->bkgqs", qg, kt, precision=precision, preferred_element_type=jnp.float32)
    logits = logits * scale
    if mask is not None:
        mask = jnp.broadcast_to(mask, (b, lq, k.shape[1]))[:, None, None]
        logits = jnp.where(mask, logits, _MASK_VALUE)
    # softmax with the normalisation deferred to the output (as flash attention does): exp(l - max) @ v, then
    # divided by the row sums — the same math as softmax(l) @ v, but the (.., Lq, Lk) matrix is not rescaled
    # (one pass less over it, forward and backward)
    unnormalized = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    denom = jnp.sum(unnormalized, axis=-1, keepdims=True)  # (b, kv, g, q, 1)
    out = jnp.einsum("bkgqs,bksd->bkgqd", unnormalized.astype(v.dtype), vt, precision=precision,
                     preferred_element_type=jnp.float32)
    out = jnp.transpose(out / denom, (0, 3, 1, 2, 4))  # (b, q, kv, g, d)
    return out.astype(q.dtype).reshape(b, lq, h, d)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SegmentLayout:
    """Rows of a packed (N, ...) sequence grouped into segments that attend only within themselves.

    gather: (S, Lb) int32 — row index of each slot (padding slots point at row 0);
    valid:  (S, Lb) bool  — slot holds a real row;
    scatter: (N,) int32   — flat slot index (into S * Lb) of each row (rows in no segment point at slot 0);
    dense_segments: static int — D > 0 when segment s < D holds exactly rows [s*Lb, (s+1)*Lb) in order, the
        segments >= D are empty and rows >= D*Lb belong to no segment (equal-length segments in row order, e.g.
        the frames of a video); then `segment_attention` reshapes rows into segments instead of gathering. 0 =
        general layout. With `bucket_segments`, D also counts trailing blocks of padding rows (up to the
        bucketed number of segments), so that it takes few distinct values.
    """

    gather: jax.Array
    valid: jax.Array
    scatter: jax.Array
    dense_segments: int = dataclasses.field(default=0, metadata=dict(static=True))

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
        dense = _dense_segments(gather, valid, n)
        if dense and bucket_segments:
            # The count is static: round it up like the segments (the extra ones hold padding rows), or every
            # distinct number of frames in a batch compiles a new program.
            dense = min(num_seg, n // block)
        return SegmentLayout(gather, valid, scatter, dense)


def _dense_segments(gather: np.ndarray, valid: np.ndarray, n: int) -> int:
    """Host-side: the `dense_segments` count of a layout (0 unless its real segments tile the leading rows)."""
    full = valid.all(axis=1)
    dense = int(full.sum())
    lb = gather.shape[1]
    if (dense == 0 or not full[:dense].all() or valid[dense:].any() or dense * lb > n
            or not np.array_equal(gather[:dense].reshape(-1), np.arange(dense * lb))):
        return 0
    return dense


def segment_attention(q: jax.Array, k: jax.Array, v: jax.Array, layout: SegmentLayout, *, scale: float,
                      precision=None) -> jax.Array:
    """q, k, v: (N, H, D) -> (N, H, D), each row attending to the rows of its own segment (bidirectional).
    Rows in no segment get the output of the first slot (as the general path's scatter gives them), or, when a
    bucketed dense layout counts their block, attend within it: padding rows, whose outputs nobody reads."""
    n, h, d = q.shape
    s, lb = layout.gather.shape
    if layout.dense_segments:
        rows = layout.dense_segments * lb
        qs, ks, vs = (x[:rows].reshape(layout.dense_segments, lb, h, d) for x in (q, k, v))
        out = dot_product_attention(qs, ks, vs, None, scale=scale, precision=precision).reshape(rows, h, d)
        if rows < n:
            out = jnp.concatenate([out, jnp.broadcast_to(out[:1], (n - rows, h, d))])
        return out
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
