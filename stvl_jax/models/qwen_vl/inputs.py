"""Host-side batch preparation: the HF processor's dict of numpy arrays -> `ModelInputs` for the jitted model.

Validates what the model would otherwise fail on cryptically (placeholder counts vs grids, shapes), computes
M-RoPE position ids when the batch does not carry them, and resolves the vision layout (`vision_inputs.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import numpy as np

from stvl_jax.errors import InputError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.host.positions import get_rope_index
from stvl_jax.models.qwen_vl.vision_inputs import VisionInputs, prepare_vision_inputs

KNOWN_KEYS = frozenset({
    "input_ids", "attention_mask", "position_ids", "pixel_values", "image_grid_thw", "pixel_values_videos",
    "video_grid_thw", "mm_token_type_ids", "token_type_ids", "second_per_grid_ts", "labels", "loss_weights",
    "rope_deltas",
})


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ModelInputs:
    input_ids: jax.Array  # (B, L) int32
    attention_mask: jax.Array  # (B, L) int32, 1 = real token
    position_ids: jax.Array  # (3, B, L) int32
    vision: VisionInputs | None = None


def _as_numpy(name: str, value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor from an HF processor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as e:  # noqa: BLE001 - report the field
        raise InputError(f"batch field {name!r} is not array-like: {e}") from None


def prepare_inputs(config: QwenVLConfig, batch: Mapping, *, pad_patches_to_multiple: int | None = None,
                   vision_buckets: bool = False) -> tuple[ModelInputs, np.ndarray]:
    """Returns (ModelInputs of numpy arrays, rope_deltas (B, 1)). `vision_buckets` pads the packed vision
    sequence to bucket sizes (see `vision_inputs.bucket`) so varying frame counts reuse compiled programs."""
    unknown = set(batch) - KNOWN_KEYS
    if unknown:
        raise InputError(f"unknown batch fields {sorted(unknown)}; expected a subset of {sorted(KNOWN_KEYS)}")
    if "input_ids" not in batch:
        raise InputError("batch has no 'input_ids'")
    b = {k: _as_numpy(k, v) for k, v in batch.items() if v is not None}
    ids = b["input_ids"]
    if ids.ndim != 2:
        raise InputError(f"input_ids must be (batch, length), got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= config.text.vocab_size):
        raise InputError(f"input_ids outside [0, vocab_size={config.text.vocab_size}): "
                         f"min {ids.min()}, max {ids.max()}")
    mask = b.get("attention_mask", np.ones_like(ids))
    if mask.shape != ids.shape:
        raise InputError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    b["attention_mask"] = mask

    unit = config.vision.merge_unit
    for kind, token, grid_key in (("image", config.image_token_id, "image_grid_thw"),
                                  ("video", config.video_token_id, "video_grid_thw")):
        n_tokens = int(((ids == token) & (mask != 0)).sum())
        grid = b.get(grid_key)
        n_expected = 0 if grid is None else int(np.asarray(grid).reshape(-1, 3).prod(-1).sum()) // unit
        if n_tokens != n_expected:
            raise InputError(f"{kind} placeholder tokens ({n_tokens}) do not match {grid_key}, which describes "
                             f"{n_expected} merged tokens")

    try:
        position_ids, deltas = rope_index(config, b)
    except ValueError as e:
        raise InputError(str(e)) from None
    if "position_ids" in b:
        given = b["position_ids"]
        if given.ndim == 3 and given.shape[0] == 4:  # HF's (text, t, h, w) layout
            given = given[1:]
        if given.shape != position_ids.shape:
            raise InputError(f"position_ids shape {given.shape} != (3, batch, length) {position_ids.shape}")
        position_ids = given

    vision = prepare_vision_inputs(
        config,
        pixel_values=b.get("pixel_values"),
        image_grid_thw=b.get("image_grid_thw"),
        pixel_values_videos=b.get("pixel_values_videos"),
        video_grid_thw=b.get("video_grid_thw"),
        pad_to_multiple=pad_patches_to_multiple,
        buckets=vision_buckets,
    )
    inputs = ModelInputs(ids.astype(np.int32), mask.astype(np.int32), position_ids.astype(np.int32), vision)
    return inputs, deltas


def rope_index(config: QwenVLConfig, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """The model's fallback positions: `host.positions.get_rope_index` with the token ids, merge size and
    `positions` settings of `config` (the same rule the training pipeline applies per example)."""
    p = config.positions
    return get_rope_index(
        batch["input_ids"], image_grid_thw=batch.get("image_grid_thw"), video_grid_thw=batch.get("video_grid_thw"),
        attention_mask=batch.get("attention_mask"), mm_token_type_ids=batch.get("mm_token_type_ids"),
        second_per_grid_ts=batch.get("second_per_grid_ts"), family=config.family,
        spatial_merge_size=config.vision.spatial_merge_size, tokens_per_second=p.tokens_per_second,
        image_token_id=config.image_token_id, video_token_id=config.video_token_id,
        video_position_advance=p.video_position_advance)
