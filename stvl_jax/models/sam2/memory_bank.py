"""SAM2's memory bank for jitted per-frame tracking: static shapes, HF `Sam2VideoModel` selection rules.

One bank per object holds, for every frame of the video (capacity `T`, fixed), the encoded spatial memory
(HW tokens x mem_dim), the object pointer (hidden_dim) and what the frame is (none / conditioning /
tracked). A frame's memory is assembled by pure functions of (bank, frame index) with fixed-size outputs and a
validity mask, so one compiled step serves every frame; `MemoryAttention` takes the mask as `memory_mask`:

- spatial memories: the selected conditioning frames (all, or the `max_cond_frame_num` closest: the closest
  before, the closest at/after, then by distance, ties in insertion order) with temporal embedding row
  num_maskmem - 1, and the previous num_maskmem - 1 frames (following in reverse tracking), row r - 1 for
  distance r, taken when tracked or conditioning-but-unselected;
- object pointers: every conditioning frame not in the future, then tracked frames up to
  min(T, max_object_pointers_in_encoder) - 1 away; positions = sine(offset / max offset) -> linear, each
  pointer split into hidden_dim / mem_dim tokens that RoPE skips. `meta_pointers`: Meta's `sam2` rule instead
  (the SAM2 VIRST runs): only the *selected* conditioning frames' pointers, and the unselected conditioning
  frames count as tracked ones among the previous frames (the two rules agree when every conditioning frame is
  selected, e.g. max_cond_frame_num = -1).

`cond_capacity` (static) bounds the number of conditioning frames per object (the host refuses more).
Tokens come in a different order than HF's concatenation: attention is order-free over keys.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.models.sam2.memory_config import MemoryBankConfig
from stvl_jax.models.sam2.position import sine_1d
from stvl_jax.models.sam2.two_way_transformer import FeedForward
from stvl_jax.nn.conv import Conv2d
from stvl_jax.nn.linear import Linear
from stvl_jax.nn.params import param, zeros

NONE, COND, TRACKED = 0, 1, 2  # what a frame of the bank holds


class MemoryEmbeddings(nnx.Module):
    """The video-only parameters of HF `Sam2VideoModel` (top level there): temporal memory embedding, object
    pointer head and its temporal projection, no-object pointer, occlusion embedding, mask-prompt downsampler."""

    def __init__(self, cfg: MemoryBankConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        d, m = cfg.hidden_dim, cfg.mem_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.memory_temporal_positional_encoding = param(rngs, zeros, (cfg.num_maskmem, m),
                                                         ("sam2_maskmem", "sam2_mem"), param_dtype)
        # in HF's state dict but unused by its forward (and Meta's); kept so export is exact
        self.no_memory_positional_encoding = param(rngs, zeros, (d,), ("vis_embed",), param_dtype)
        self.no_object_pointer = param(rngs, zeros, (d,), ("vis_embed",), param_dtype)
        self.object_pointer_proj = FeedForward(d, d, d, 3, act="relu", **kw)
        self.temporal_positional_encoding_projection_layer = (
            Linear(d, m, in_axes=("vis_embed",), out_axes=("sam2_mem",), use_bias=True, **kw)
            if cfg.enable_temporal_pos_encoding_for_object_pointers else None)
        self.occlusion_spatial_embedding_parameter = (
            param(rngs, zeros, (m,), ("sam2_mem",), param_dtype) if cfg.enable_occlusion_spatial_embedding else None)
        self.mask_downsample = Conv2d(1, 1, 4, stride=4, in_axis="sam2_chans", out_axis="sam2_chans",
                                      window_axis="sam2_window", **kw)

    def object_pointer(self, sam_token: jax.Array, object_score_logits: jax.Array) -> jax.Array:
        """sam_token (B, hidden), object_score_logits (B, 1) -> pointer (B, hidden); no-object pointer where the
        object is predicted absent."""
        ptr = self.object_pointer_proj(sam_token)
        present = (object_score_logits > 0).astype(ptr.dtype)
        return present * ptr + (1 - present) * self.no_object_pointer[...].astype(ptr.dtype)

    def mask_for_memory(self, high_res_logits: jax.Array, binarize: bool) -> jax.Array:
        """Mask logits -> memory-encoder input: binarised (a prompted frame at inference) or sigmoid, then
        * sigmoid_scale_for_mem_enc + sigmoid_bias_for_mem_enc."""
        cfg = self.config
        # binarize may be traced (a per-frame flag of the jitted tracking step)
        m = jnp.where(binarize, (high_res_logits > 0).astype(high_res_logits.dtype), jax.nn.sigmoid(high_res_logits))
        return m * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc

    def add_occlusion(self, memory_features: jax.Array, object_score_logits: jax.Array) -> jax.Array:
        """memory_features (B, H, W, mem_dim) + the occlusion embedding where the object is absent."""
        if self.occlusion_spatial_embedding_parameter is None:
            return memory_features
        absent = (object_score_logits <= 0).astype(memory_features.dtype)[:, None, None, :]  # (B, 1, 1, 1)
        return memory_features + absent * self.occlusion_spatial_embedding_parameter[...].astype(memory_features.dtype)

    def pointer_positions(self, offsets: jax.Array, max_offset: jax.Array) -> jax.Array:
        """offsets (P,) int frame distances -> (P, mem_dim) pointer position encodings."""
        if self.temporal_positional_encoding_projection_layer is None:
            return jnp.zeros((offsets.shape[0], self.config.mem_dim), jnp.float32)
        pe = sine_1d(offsets.astype(jnp.float32) / max_offset.astype(jnp.float32), self.config.hidden_dim)
        return self.temporal_positional_encoding_projection_layer(pe)


# ------------------------------------------------------------------------------------------ the bank
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MemoryBank:
    """Per-frame memory of one object. features (T, HW, mem_dim); pointers (T, hidden); kind (T,) int32
    NONE/COND/TRACKED; cond_rank (T,) int32 insertion order of conditioning frames (HF keeps them in a dict
    in insertion order, which breaks distance ties in the closest-frame selection)."""

    features: jax.Array
    pointers: jax.Array
    kind: jax.Array
    cond_rank: jax.Array

    @staticmethod
    def empty(num_frames: int, tokens: int, mem_dim: int, hidden_dim: int, dtype=jnp.bfloat16) -> "MemoryBank":
        """dtype: the spatial memories' storage dtype; bf16 as HF and Meta store them (they round every encoded
        memory to bf16), so use bf16 for parity with them."""
        return MemoryBank(jnp.zeros((num_frames, tokens, mem_dim), dtype), jnp.zeros((num_frames, hidden_dim)),
                          jnp.zeros((num_frames,), jnp.int32), jnp.zeros((num_frames,), jnp.int32))

    def store(self, frame_idx, features: jax.Array, pointer: jax.Array, conditioning, update=True) -> "MemoryBank":
        """Record frame `frame_idx`: features (HW, mem_dim), pointer (hidden,), conditioning (bool). A frame
        stored again keeps its insertion rank if it was conditioning (as a dict key re-assigned in HF keeps its
        place). update (bool, may be traced): False leaves the bank as it was (the select is on frame_idx's
        row only, so a donated bank is updated in place rather than copied whole)."""
        conditioning = jnp.asarray(conditioning)
        was_cond = self.kind[frame_idx] == COND
        rank = jnp.where(was_cond, self.cond_rank[frame_idx], jnp.sum(self.kind == COND))
        rank = jnp.where(conditioning, rank, 0).astype(jnp.int32)
        kind = jnp.where(conditioning, COND, TRACKED).astype(jnp.int32)

        def put(table, value):
            return table.at[frame_idx].set(jnp.where(update, value.astype(table.dtype), table[frame_idx]))

        return MemoryBank(put(self.features, features), put(self.pointers, pointer), put(self.kind, kind),
                          put(self.cond_rank, rank))


def _select_closest(t, valid, rank, frame_idx, max_cond: int):
    """Which of the conditioning frames t (K,) [valid] are selected (HF `_select_closest_cond_frames`)."""
    if max_cond == -1:
        return valid
    big = jnp.iinfo(jnp.int32).max
    before = jnp.max(jnp.where(valid & (t < frame_idx), t, -1))
    after = jnp.min(jnp.where(valid & (t >= frame_idx), t, big))
    pre = valid & ((t == before) | (t == after))
    rest = valid & ~pre
    # the rest by distance, ties in insertion order; HF takes sorted(rest)[:max_cond - len(pre)] — a Python
    # slice, so a negative count (before and after exist, max_cond = 1) drops that many from the END
    n_take = max_cond - jnp.sum(pre)
    n_take = jnp.where(n_take >= 0, n_take, jnp.maximum(jnp.sum(rest) + n_take, 0))
    key = jnp.where(rest, jnp.abs(t - frame_idx) * (t.shape[0] + 1) + rank, big)
    order = jnp.argsort(jnp.argsort(key, stable=True), stable=True)
    chosen = rest & (order < n_take)
    return jnp.where(jnp.sum(valid) <= max_cond, valid, pre | chosen)


def select_memory_frames(bank: MemoryBank, frame_idx, cfg: MemoryBankConfig, *, cond_capacity: int,
                         reverse: bool = False, num_frames=None, training: bool = False,
                         max_cond_frame_num: int | None = None, meta_pointers: bool = False):
    """The frames whose memories frame `frame_idx` attends to (all outputs static-shaped, jittable):

    spatial: (frames (S,), temporal-embedding rows (S,), valid (S,)), S = cond_capacity + num_maskmem - 1;
    pointers: (frames (P,), offsets (P,), valid (P,)), P = cond_capacity + max_object_pointers_in_encoder - 1;
    max_offset: the offset normalisation, min(num_frames, max_object_pointers_in_encoder) - 1 (at least 1).
    num_frames: the video's length (traced or static); None = streaming (no end, HF `streaming=True`).
    training: SAM2 training also takes the pointers of future conditioning frames (inference: past ones only).
    max_cond_frame_num: overrides the config's (static; VIRST attends to 3 anchors); meta_pointers: Meta's
    pointer rule (module docstring).
    """
    T = bank.kind.shape[0]
    f = jnp.asarray(frame_idx, jnp.int32)
    sign = jnp.where(jnp.asarray(reverse), -1, 1).astype(jnp.int32)  # reverse may be traced
    t = jnp.nonzero(bank.kind == COND, size=cond_capacity, fill_value=-1)[0].astype(jnp.int32)
    valid = t >= 0
    t_safe = jnp.maximum(t, 0)
    max_cond = cfg.max_cond_frame_num if max_cond_frame_num is None else max_cond_frame_num
    selected = _select_closest(t, valid, bank.cond_rank[t_safe], f, max_cond)
    selected_by_frame = jnp.zeros((T,), bool).at[t_safe].max(selected)

    r = np.arange(1, cfg.num_maskmem, dtype=np.int32)
    p = f - sign * r
    in_range = (p >= 0) & (p < T)
    p_safe = jnp.clip(p, 0, T - 1)
    k = bank.kind[p_safe]
    prev_ok = in_range & ((k == TRACKED) | ((k == COND) & ~selected_by_frame[p_safe]))
    spatial = (jnp.concatenate([t_safe, p_safe]),
               jnp.concatenate([jnp.full((cond_capacity,), cfg.num_maskmem - 1, jnp.int32), jnp.asarray(r - 1)]),
               jnp.concatenate([selected, prev_ok]))

    max_ptrs = cfg.max_object_pointers_in_encoder
    n_ptrs = max_ptrs if num_frames is None else jnp.minimum(jnp.asarray(num_frames, jnp.int32), max_ptrs)
    d = np.arange(1, max_ptrs, dtype=np.int32)
    q = f - sign * d
    end = T if num_frames is None else jnp.minimum(jnp.asarray(num_frames, jnp.int32), T)
    q_safe = jnp.clip(q, 0, T - 1)
    kq = bank.kind[q_safe]
    tracked_like = (kq == TRACKED) | ((kq == COND) & ~selected_by_frame[q_safe]) if meta_pointers else kq == TRACKED
    ptr_ok = (d < n_ptrs) & (q >= 0) & (q < end) & tracked_like
    cond_for_ptr = selected if meta_pointers else valid
    cond_ptr_ok = cond_for_ptr if training else cond_for_ptr & jnp.where(jnp.asarray(reverse), t >= f, t <= f)
    pointers = (jnp.concatenate([t_safe, q_safe]), jnp.concatenate([(f - t_safe) * sign, jnp.asarray(d)]),
                jnp.concatenate([cond_ptr_ok, ptr_ok]))
    # a 1-frame video has no pointer to place (Meta's division by min(T, max) - 1 = 0 is never reached there);
    # here the memory branch is computed under a select even for conditioning frames: keep it finite
    return spatial, pointers, jnp.asarray(jnp.maximum(n_ptrs - 1, 1), jnp.float32)


def num_pointer_tokens(cfg: MemoryBankConfig, cond_capacity: int) -> int:
    """The static number of pointer tokens `assemble_memory` appends (for `num_object_pointer_tokens`)."""
    return (cond_capacity + cfg.max_object_pointers_in_encoder - 1) * cfg.pointer_splits


def assemble_memory(emb: MemoryEmbeddings, bank: MemoryBank, pos_table: jax.Array, frame_idx, *,
                    cond_capacity: int, reverse: bool = False, num_frames=None, training: bool = False,
                    max_cond_frame_num: int | None = None, meta_pointers: bool = False,
                    spatial_slots: int | None = None):
    """(memory (M, mem_dim), memory_pos (M, mem_dim), memory_mask (M,), num_pointer_tokens) for one frame:
    S spatial memories of HW tokens each, then P pointers of hidden_dim / mem_dim tokens each (static M).
    pos_table: (HW, mem_dim) the memory encoder's position encoding (the same for every frame).
    spatial_slots (static): keep only that many spatial slots, the valid ones first (the caller guarantees at
    most that many are valid; attention is order-free over keys, so the output is the same with fewer keys to
    attend: the memory attention's cross-attention cost is linear in S). None: all S."""
    cfg = emb.config
    (s_frames, s_rows, s_ok), (p_frames, p_offsets, p_ok), max_offset = select_memory_frames(
        bank, frame_idx, cfg, cond_capacity=cond_capacity, reverse=reverse, num_frames=num_frames, training=training,
        max_cond_frame_num=max_cond_frame_num, meta_pointers=meta_pointers)
    if spatial_slots is not None and spatial_slots < s_ok.shape[0]:
        if spatial_slots < 1:
            raise ValueError(f"spatial_slots must be >= 1, got {spatial_slots}")
        keep = jnp.argsort(~s_ok, stable=True)[:spatial_slots]
        s_frames, s_rows, s_ok = s_frames[keep], s_rows[keep], s_ok[keep]
    hw = bank.features.shape[1]
    dtype = pos_table.dtype
    spatial = bank.features[s_frames].astype(dtype).reshape(-1, cfg.mem_dim)
    tpos = emb.memory_temporal_positional_encoding[...].astype(dtype)[s_rows]  # (S, mem_dim)
    spatial_pos = (pos_table[None] + tpos[:, None]).reshape(-1, cfg.mem_dim)
    splits = cfg.pointer_splits
    ptrs = bank.pointers[p_frames].astype(dtype).reshape(-1, cfg.mem_dim)  # (P * splits, mem_dim)
    ptr_pos = jnp.repeat(emb.pointer_positions(p_offsets, max_offset).astype(dtype), splits, axis=0)
    memory = jnp.concatenate([spatial, ptrs])
    memory_pos = jnp.concatenate([spatial_pos, ptr_pos])
    mask = jnp.concatenate([jnp.repeat(s_ok, hw), jnp.repeat(p_ok, splits)])
    assert ptrs.shape[0] == num_pointer_tokens(cfg, cond_capacity)
    return memory, memory_pos, mask, ptrs.shape[0]


def encode_memory(emb: MemoryEmbeddings, encoder, pixel_features: jax.Array, high_res_logits: jax.Array,
                  object_score_logits: jax.Array, *, binarize: bool) -> tuple[jax.Array, jax.Array]:
    """A frame's new memory (HF `_encode_new_memory`): pixel_features (B, H, W, hidden) (the frame's top-level
    features, before memory conditioning), high_res_logits (B, Hm, Wm) at the encoder's input size,
    object_score_logits (B, 1). Returns (features, pos): (B, H, W, mem_dim) each, in fp32 (the bank's dtype
    does the bf16 rounding HF applies)."""
    features, pos = encoder(pixel_features, emb.mask_for_memory(high_res_logits, binarize))
    return emb.add_occlusion(features, object_score_logits), pos


def condition_on_memory(attention, emb: MemoryEmbeddings, bank: MemoryBank, features: jax.Array,
                        features_pos: jax.Array, pos_table: jax.Array, frame_idx, initial, no_memory_embedding, *,
                        cond_capacity: int, reverse: bool = False, num_frames=None, training: bool = False,
                        dropout_rng=None, max_cond_frame_num: int | None = None,
                        meta_pointers: bool = False, spatial_slots: int | None = None) -> jax.Array:
    """A frame's memory-conditioned top-level features (HF `_prepare_memory_conditioned_features`), one object:
    features, features_pos (HW, hidden) -> (HW, hidden). `initial` (bool, may be traced): an initial
    conditioning frame, which attends to no memory and gets `no_memory_embedding` (hidden,) added instead.
    Batch objects with `jax.vmap` (the branch then becomes a select). training / dropout_rng: SAM2's training
    pointer selection (`select_memory_frames`) and memory-attention dropout; max_cond_frame_num / meta_pointers
    as `select_memory_frames`; spatial_slots as `assemble_memory`."""
    def attend(_):
        memory, memory_pos, mask, n_ptr = assemble_memory(emb, bank, pos_table, frame_idx,
                                                          cond_capacity=cond_capacity, reverse=reverse,
                                                          num_frames=num_frames, training=training,
                                                          max_cond_frame_num=max_cond_frame_num,
                                                          meta_pointers=meta_pointers, spatial_slots=spatial_slots)
        return attention(features[None], memory[None], features_pos[None], memory_pos[None],
                         num_object_pointer_tokens=n_ptr, memory_mask=mask[None],
                         dropout_rng=dropout_rng)[0].astype(features.dtype)

    def no_memory(_):
        return features + jnp.asarray(no_memory_embedding, features.dtype).reshape(-1)

    return jax.lax.cond(jnp.asarray(initial), no_memory, attend, None)
