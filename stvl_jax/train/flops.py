"""Model FLOPs of a Qwen-VL training step (vision tower, mergers and LLM) and peak FLOP/s per device -> MFU.

Forward FLOPs of one batch (a multiply-add is 2 FLOPs; elementwise work, norms and softmax are not counted):

    vision  = sum over real patches   2 * (patch_embed + all ViT block kernels)            [per patch]
            + sum over blocks and attention segments s of size n_s:   4 * n_s^2 * d_vis     [QK^T and AV]
    merger  = sum over merged tokens  2 * (merger + DeepStack merger kernels)
    llm     = sum over real tokens    2 * decoder layer kernels
            + sum over rows of real length n, over layers:   4 * n(n+1)/2 * heads * head_dim  [causal]
    head    = sum over real tokens    2 * lm_head (or the tied embedding table)

Segments: Qwen3-VL attends within each temporal patch (h*w patches); Qwen2.5-VL within windows in most blocks
and within temporal patches in `fullatt_block_indexes`.

Training multiplies each component's forward FLOPs by 1 (forward) + 1 (activation gradients, needed when some
trainable parameter lies upstream of or inside the component) + 1 (weight gradients, if its group trains).
Data flow is vision -> merger -> LLM (embeddings enter at the LLM's input) -> head, so a frozen vision tower
under a trainable merger costs 1x, a frozen LLM under a trainable merger 2x. Padding tokens and padded patch
rows are not counted (MFU, not hardware utilisation), nor is rematerialisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from stvl_jax.models.qwen_vl.config import QwenVLConfig

# bf16 dense peak FLOP/s per device; matched as substrings of jax's `device_kind` (lower case), in order
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("v5 lite", 197e12), ("v5e", 197e12), ("v5p", 459e12), ("v5", 459e12), ("v6 lite", 918e12),
    ("v6e", 918e12), ("v4", 275e12), ("tpu7x", 2307e12), ("h200", 989e12), ("h100", 989e12),
    ("gh200", 989e12), ("a100", 312e12), ("b200", 2250e12), ("l4", 121e12),
)


def peak_flops_per_device(device_kind: str, override: float | None = None) -> float | None:
    """Peak bf16 FLOP/s for a device kind, `override` if given, None if unknown (e.g. CPU)."""
    if override:
        return float(override)
    kind = device_kind.lower()
    for key, value in PEAK_FLOPS:
        if key in kind:
            return value
    return None


@dataclasses.dataclass(frozen=True)
class KernelSizes:
    """Matmul weight elements applied per unit of work, from the model's parameter shapes."""

    per_patch: int  # patch embed + every ViT block
    per_merged_token: int  # merger + DeepStack mergers
    per_text_token: int  # decoder layers
    per_head_token: int  # lm_head (or the tied table)

    @classmethod
    def from_config(cls, config: QwenVLConfig) -> "KernelSizes":
        from stvl_jax.models.qwen_vl.loading import param_shapes

        shapes = param_shapes(config)
        patch = merged = text = head = 0
        for path, shape in shapes.items():
            size = int(np.prod(shape))
            if path.startswith("visual/merger/") or path.startswith("visual/deepstack_merger_"):
                merged += size if path.endswith("kernel") else 0
            elif path.startswith("visual/"):
                patch += size if path.endswith("kernel") else 0
            elif path.startswith("language_model/layers/") and path.endswith("kernel"):
                text += size
            elif path == "lm_head/kernel":
                head += size
        if config.tie_word_embeddings:
            head += config.text.vocab_size * config.text.hidden_size
        return cls(patch, merged, text, head)


def vision_segment_sizes(config: QwenVLConfig, grids: np.ndarray) -> tuple[list[int], list[int]]:
    """(frame segment sizes, window segment sizes) in patches for the (n, 3) grids of a batch."""
    vc = config.vision
    merge = vc.spatial_merge_size
    frames, windows = [], []
    for t, h, w in np.asarray(grids, np.int64).reshape(-1, 3):
        frames += [int(h * w)] * int(t)
        if vc.window_size:
            wm = vc.window_size // merge // vc.patch_size
            lh, lw = h // merge, w // merge
            rows = [min(wm, lh - r) for r in range(0, lh, wm)]
            cols = [min(wm, lw - c) for c in range(0, lw, wm)]
            windows += [int(r * c * merge * merge) for r in rows for c in cols] * int(t)
    return frames, windows


def forward_flops(config: QwenVLConfig, kernels: KernelSizes, row_lengths: Iterable[int],
                  grids: np.ndarray | None) -> dict[str, float]:
    """{'vision', 'merger', 'llm', 'head'} forward FLOPs of one batch from the real row lengths (tokens) and
    all vision grids."""
    rows = np.asarray(list(row_lengths), np.float64)
    t = config.text
    llm = 2.0 * kernels.per_text_token * rows.sum()
    head = 2.0 * kernels.per_head_token * rows.sum()
    llm += 4.0 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * float((rows * (rows + 1) / 2).sum())
    vision = merger = 0.0
    if grids is not None and len(grids):
        vc = config.vision
        patches = float(np.asarray(grids, np.int64).reshape(-1, 3).prod(-1).sum())
        frames, windows = vision_segment_sizes(config, grids)
        sq_frames = float(np.square(np.asarray(frames, np.float64)).sum())
        if vc.window_size:
            n_full = len(vc.fullatt_block_indexes)
            sq_windows = float(np.square(np.asarray(windows, np.float64)).sum())
            attn_sq = n_full * sq_frames + (vc.depth - n_full) * sq_windows
        else:
            attn_sq = vc.depth * sq_frames
        vision = 2.0 * kernels.per_patch * patches + 4.0 * vc.hidden_size * attn_sq
        merger = 2.0 * kernels.per_merged_token * patches / vc.merge_unit
    return {"vision": float(vision), "merger": float(merger), "llm": float(llm), "head": float(head)}


def train_multipliers(trainable_groups: Iterable[str]) -> dict[str, int]:
    """Forward-FLOP multiplier per component (see module docstring). The input embedding (group `embed`) feeds
    the decoder, so training it makes the decoder need activation gradients; the head's weights are `embed`."""
    g = set(trainable_groups)
    out = {}
    upstream = False
    for comp, own, feeds in (("vision", "vision", None), ("merger", "merger", None), ("llm", "llm", "embed"),
                             ("head", "embed", None)):
        upstream = upstream or feeds in g
        trains = own in g
        out[comp] = 1 + int(upstream or trains) + int(trains)
        upstream = upstream or trains
    return out


def train_step_flops(forward: Mapping[str, float], multipliers: Mapping[str, int]) -> float:
    return float(sum(forward[k] * multipliers[k] for k in forward))
