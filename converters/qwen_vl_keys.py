"""Declarative HF <-> stvl-jax key map for Qwen3-VL and Qwen2.5-VL, plus the per-direction hooks.

Each `Entry` ties one HF tensor name pattern (with `{i}` for a layer index) to one or more of our parameter
paths ("/"-joined nnx state paths). Stacked layers (`layers=N`) gather N HF tensors into the leading axis.
Hooks know both directions:

    linear   HF (out, in)            <-> ours (in..., out...)  transpose + reshape (heads split out)
    conv3d   HF (O, C, T, P, P)      <-> ours (C*T*P*P, O)
    split3   HF fused qkv (3*D, ...) <-> ours q, k, v (vision tower), each then a `linear`/`vector`
    vector   HF (n,)                 <-> ours (any shape of n elements), e.g. a bias (H*hd,) <-> (H, hd)

Tied embeddings have no `lm_head.weight` entry (the exporter writes none; HF ties on load).
Qwen2.5-VL hub checkpoints use the legacy names `visual.*` / `model.*`; `canonical_hf_key` maps them to the
transformers-5 names this table uses, and `legacy_hf_key` maps back for export.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from stvl_jax.models.qwen_vl.config import QwenVLConfig

LINEAR, CONV3D, VECTOR = "linear", "conv3d", "vector"


@dataclasses.dataclass(frozen=True)
class Entry:
    hf: str  # HF name; "{i}" is the layer index when `layers` is set
    ours: tuple[str, ...]  # one path, or three for a fused qkv split
    hook: str  # LINEAR | CONV3D | VECTOR
    layers: int | None = None  # stacked: number of layers
    hf_shape: tuple[int, ...] = ()  # expected HF shape of one tensor (checked on import, produced on export)

    def hf_names(self) -> list[str]:
        return [self.hf.format(i=i) for i in range(self.layers)] if self.layers else [self.hf]


def key_map(config: QwenVLConfig) -> list[Entry]:
    vc, tc = config.vision, config.text
    qwen3 = config.family == "qwen3_vl"
    D = vc.hidden_size
    E = []

    def add(hf, ours, hook, shape, layers=None):
        E.append(Entry(hf, (ours,) if isinstance(ours, str) else tuple(ours), hook, layers, tuple(shape)))

    # ---- vision tower
    v, vb, L = "model.visual.", "model.visual.blocks.{i}.", vc.depth
    add(v + "patch_embed.proj.weight", "visual/patch_embed/kernel", CONV3D,
        (D, vc.in_channels, vc.temporal_patch_size, vc.patch_size, vc.patch_size))
    if qwen3:
        add(v + "patch_embed.proj.bias", "visual/patch_embed/bias", VECTOR, (D,))
        add(v + "pos_embed.weight", "visual/pos_embed", VECTOR, (vc.num_position_embeddings, D))
    for n in ("norm1", "norm2"):
        add(vb + f"{n}.weight", f"visual/blocks/{n}/weight", VECTOR, (D,), L)
        if qwen3:
            add(vb + f"{n}.bias", f"visual/blocks/{n}/bias", VECTOR, (D,), L)
    qkv = tuple(f"visual/blocks/attn/{p}_proj" for p in "qkv")
    add(vb + "attn.qkv.weight", [p + "/kernel" for p in qkv], "split3:" + LINEAR, (3 * D, D), L)
    add(vb + "attn.qkv.bias", [p + "/bias" for p in qkv], "split3:" + VECTOR, (3 * D,), L)
    add(vb + "attn.proj.weight", "visual/blocks/attn/proj/kernel", LINEAR, (D, D), L)
    add(vb + "attn.proj.bias", "visual/blocks/attn/proj/bias", VECTOR, (D,), L)
    I = vc.intermediate_size
    if qwen3:
        for hf_n, ours_n, shape in (("linear_fc1", "fc1", (I, D)), ("linear_fc2", "fc2", (D, I))):
            add(vb + f"mlp.{hf_n}.weight", f"visual/blocks/mlp/{ours_n}/kernel", LINEAR, shape, L)
            add(vb + f"mlp.{hf_n}.bias", f"visual/blocks/mlp/{ours_n}/bias", VECTOR, shape[:1], L)
    else:
        for n, shape in (("gate_proj", (I, D)), ("up_proj", (I, D)), ("down_proj", (D, I))):
            add(vb + f"mlp.{n}.weight", f"visual/blocks/mlp/{n}/kernel", LINEAR, shape, L)
            add(vb + f"mlp.{n}.bias", f"visual/blocks/mlp/{n}/bias", VECTOR, shape[:1], L)

    M, O = D * vc.merge_unit, vc.out_hidden_size

    def merger(hf_prefix, ours_prefix, postshuffle):
        norm_dim = M if postshuffle else D
        if qwen3:
            add(hf_prefix + "norm.weight", ours_prefix + "norm/weight", VECTOR, (norm_dim,))
            add(hf_prefix + "norm.bias", ours_prefix + "norm/bias", VECTOR, (norm_dim,))
            fc1, fc2 = "linear_fc1", "linear_fc2"
        else:
            add(hf_prefix + "ln_q.weight", ours_prefix + "norm/weight", VECTOR, (norm_dim,))
            fc1, fc2 = "mlp.0", "mlp.2"
        add(hf_prefix + f"{fc1}.weight", ours_prefix + "mlp/fc1/kernel", LINEAR, (M, M))
        add(hf_prefix + f"{fc1}.bias", ours_prefix + "mlp/fc1/bias", VECTOR, (M,))
        add(hf_prefix + f"{fc2}.weight", ours_prefix + "mlp/fc2/kernel", LINEAR, (O, M))
        add(hf_prefix + f"{fc2}.bias", ours_prefix + "mlp/fc2/bias", VECTOR, (O,))

    merger(v + "merger.", "visual/merger/", False)
    for j in range(len(vc.deepstack_visual_indexes)):
        merger(v + f"deepstack_merger_list.{j}.", f"visual/deepstack_merger_{j}/", True)

    # ---- text decoder
    t, tl, N = "model.language_model.", "model.language_model.layers.{i}.", tc.num_hidden_layers
    H, KV, hd, Dt, It = tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim, tc.hidden_size, \
        tc.intermediate_size
    add(t + "embed_tokens.weight", "language_model/embed_tokens/embedding", VECTOR, (tc.vocab_size, Dt))
    for n in ("input_layernorm", "post_attention_layernorm"):
        add(tl + f"{n}.weight", f"language_model/layers/{n}/weight", VECTOR, (Dt,), N)
    for p, heads in (("q", H), ("k", KV), ("v", KV)):
        add(tl + f"self_attn.{p}_proj.weight", f"language_model/layers/self_attn/{p}_proj/kernel", LINEAR,
            (heads * hd, Dt), N)
        if tc.attention_bias:
            add(tl + f"self_attn.{p}_proj.bias", f"language_model/layers/self_attn/{p}_proj/bias", VECTOR,
                (heads * hd,), N)
    add(tl + "self_attn.o_proj.weight", "language_model/layers/self_attn/o_proj/kernel", LINEAR, (Dt, H * hd), N)
    if tc.qk_norm:
        for p in ("q", "k"):
            add(tl + f"self_attn.{p}_norm.weight", f"language_model/layers/self_attn/{p}_norm/weight", VECTOR,
                (hd,), N)
    for n, shape in (("gate_proj", (It, Dt)), ("up_proj", (It, Dt)), ("down_proj", (Dt, It))):
        add(tl + f"mlp.{n}.weight", f"language_model/layers/mlp/{n}/kernel", LINEAR, shape, N)
    add(t + "norm.weight", "language_model/norm/weight", VECTOR, (Dt,))
    if not config.tie_word_embeddings:
        add("lm_head.weight", "lm_head/kernel", LINEAR, (tc.vocab_size, Dt))
    return E


# ------------------------------------------------------------------------------------------ hooks
def transpose_2d(x: np.ndarray, out: np.ndarray | None = None, block: int = 256) -> np.ndarray:
    """x.T of a 2-D array into `out` (a fresh C-contiguous array if None), copied in cache-sized tiles: 2.3x
    faster than np.ascontiguousarray(x.T) on large matrices, and transposes are most of the conversion time."""
    n, m = x.shape
    if out is None:
        out = np.empty((m, n), x.dtype)
    src, dst = x, out
    if x.dtype == out.dtype and x.dtype.itemsize in _UINTS:  # bit copies: numpy's plain strided loops
        src, dst = x.view(_UINTS[x.dtype.itemsize]), out.view(_UINTS[x.dtype.itemsize])  # (bf16: 20% faster)
    for i in range(0, n, block):
        for j in range(0, m, block):
            dst[j:j + block, i:i + block] = src[i:i + block, j:j + block].T
    return out


_UINTS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def to_ours(hook: str, hf_value: np.ndarray, our_shapes: tuple[tuple[int, ...], ...],
            outs: list[np.ndarray] | None = None, index: tuple[slice, ...] | None = None) -> list[np.ndarray]:
    """One HF tensor -> our arrays (one per path in the entry), with the shapes `our_shapes` (one layer).

    outs: C-contiguous destinations (e.g. layer i of the stacked params): written in place (casting to their
      dtype) and returned, so no temporary of the tensor's size is made.
    index: slices (step 1) into our shape: only that block of each array is produced (`outs` then have the
      block's shape). `load_model` reads each device's shard this way from a memory-mapped HF tensor, which is
      only sliced and reshaped as a view: where the block is a row and column range of the HF matrix (any
      sharding of whole heads), only those rows are touched.
    """
    outs = outs or [None] * len(our_shapes)
    hook, parts = split_parts(hook, hf_value)
    return [part_to_ours(hook, x, shape, out, index) for x, shape, out in zip(parts, our_shapes, outs)]


def split_parts(hook: str, hf_value: np.ndarray) -> tuple[str, list[np.ndarray]]:
    """(the hook of each part, the parts as views): a fused qkv tensor is three row blocks, else one part."""
    if hook.startswith("split3:"):
        return hook[len("split3:"):], np.split(hf_value, 3, axis=0)
    return hook, [hf_value]


def part_to_ours(hook: str, hf_value: np.ndarray, shape: tuple[int, ...], out: np.ndarray | None = None,
                 index: tuple[slice, ...] | None = None) -> np.ndarray:
    """One part of an HF tensor (`split_parts`) -> our array of `shape`, or its block `index` (see `to_ours`)."""
    if hook not in (LINEAR, CONV3D, VECTOR):
        raise ValueError(f"unknown hook {hook!r}")
    index = tuple(slice(None) for _ in shape) if index is None else index
    bounds = [s.indices(n) for s, n in zip(index, shape)]
    if len(index) != len(shape) or any(step != 1 for _, _, step in bounds):
        raise ValueError(f"index {index} is not a block of shape {shape}")
    block = tuple(max(hi - lo, 0) for lo, hi, _ in bounds)
    if out is None:
        out = np.empty(block, hf_value.dtype)
    if out.shape != block or not out.flags.c_contiguous:
        raise ValueError(f"to_ours writes into C-contiguous destinations of the block's shape {block}")
    if hook == VECTOR:
        out[...] = hf_value.reshape(shape)[index]
        return out
    x = hf_value.reshape(hf_value.shape[0], -1)
    block_rc = matrix_block(hook, hf_value.shape, shape, index)
    if block_rc is not None:  # the block is x[rows, cols].T: tiled transpose, nothing else read
        rows, cols = block_rc
        transpose_2d(x[rows, cols], out.reshape(cols.stop - cols.start, rows.stop - rows.start))
    else:
        out[...] = x.T.reshape(shape)[index]
    return out


def matrix_block(hook: str, hf_shape: tuple[int, ...], shape: tuple[int, ...], index: tuple[slice, ...]
                 ) -> tuple[slice, slice] | None:
    """Linear (out, in) and Conv3d (O, C, T, P, P) alike are an HF matrix x = (out, in); ours is x.T with its in
    and out axes split into our leading and trailing dimensions. -> (rows, cols) of x whose transpose is block
    `index` of our `shape` (one part of an entry), or None when the block is no such range or the hook is no
    transpose."""
    if hook not in (LINEAR, CONV3D):
        return None
    n_in = int(np.prod(hf_shape[1:]))
    bounds = [s.indices(n) for s, n in zip(index, shape)]
    split = next((k for k in range(len(shape) + 1) if int(np.prod(shape[:k])) == n_in), None)
    if split is None:
        return None
    cols, rows = _flat_range(bounds[:split], shape[:split]), _flat_range(bounds[split:], shape[split:])
    return None if cols is None or rows is None else (rows, cols)


def _flat_range(bounds: list[tuple[int, int, int]], dims: tuple[int, ...]) -> slice | None:
    """The range of C-order flat indices the block `bounds` of `dims` covers, None if it is not one range
    (a range: leading dimensions with one index, then one partial dimension, then whole dimensions)."""
    k = len(dims)
    while k and bounds[k - 1][:2] == (0, dims[k - 1]):
        k -= 1  # trailing whole dimensions
    if any(hi - lo != 1 for lo, hi, _ in bounds[:max(k - 1, 0)]):
        return None
    inner = int(np.prod(dims[k:]))
    start = sum(lo * int(np.prod(dims[d + 1:])) for d, (lo, _, _) in enumerate(bounds[:k]))
    length = (bounds[k - 1][1] - bounds[k - 1][0]) * inner if k else inner
    return slice(start, start + length)


def to_hf(hook: str, ours: list[np.ndarray], hf_shape: tuple[int, ...]) -> np.ndarray:
    """Our arrays of one entry (one layer) -> the HF tensor of shape `hf_shape`."""
    if hook.startswith("split3:"):
        inner = hook[len("split3:"):]
        part_shape = (hf_shape[0] // 3, *hf_shape[1:])
        return np.concatenate([to_hf(inner, [o], part_shape) for o in ours], axis=0)
    (x,) = ours
    if hook in (LINEAR, CONV3D):
        return transpose_2d(x.reshape(-1, hf_shape[0])).reshape(hf_shape)
    if hook == VECTOR:
        return x.reshape(hf_shape)
    raise ValueError(f"unknown hook {hook!r}")


# ------------------------------------------------------------------------------------------ naming
_LEGACY_TO_CANONICAL = ((re.compile(r"^visual\."), "model.visual."),
                        (re.compile(r"^model\.(?!visual\.|language_model\.)"), "model.language_model."))
_CANONICAL_TO_LEGACY = ((re.compile(r"^model\.visual\."), "visual."),
                        (re.compile(r"^model\.language_model\."), "model."))


def canonical_hf_key(name: str) -> str:
    """Legacy Qwen2.5-VL hub names (`visual.*`, `model.layers.*`) -> transformers-5 names."""
    for pattern, repl in _LEGACY_TO_CANONICAL:
        if pattern.search(name):
            return pattern.sub(repl, name, count=1)
    return name


def legacy_hf_key(name: str) -> str:
    for pattern, repl in _CANONICAL_TO_LEGACY:
        if pattern.search(name):
            return pattern.sub(repl, name, count=1)
    return name
