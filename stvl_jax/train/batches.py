"""Host batch -> global, sharded device arrays for the jitted step (every process calls this in lockstep).

Per process: split off the training targets (labels, loss_weights, any key the model does not take), run the
model's host preparation (validation, M-RoPE positions, vision layouts), and build global `jax.Array`s:

- token arrays (B, L) and position ids (3, B, L): each process contributes its rows
  (`sharding.host_to_mesh`), sharded over `act_batch`; processes first agree on L (the
  longest local bucket; shorter ones are right-padded with masked positions);
- vision arrays: the model packs all images then all videos of the *global* batch into one sequence, so each
  process all-gathers the raw pixels and grids and prepares the identical global `VisionInputs` (replicated).
  This moves every process's pixels to every host: fine for the CPU and single-host cases and moderate pod
  batches; per-process packing with index offsets is the known follow-up for large video batches.

A global batch the data-parallel mesh size (data x fsdp) does not divide fails with a clear message, or is
padded with fully masked rows (zero loss) when `data.pad_batch_to_mesh` is set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from stvl_jax.errors import InputError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.inputs import KNOWN_KEYS, ModelInputs, prepare_inputs
from stvl_jax.models.qwen_vl.model import place_inputs
from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs
from stvl_jax.sharding import LOGICAL_AXIS_RULES, ShardingError, host_to_mesh

MODEL_ONLY_KEYS = KNOWN_KEYS - {"labels", "loss_weights"}
VISION_RAW_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
# pixel rows padded by the pipeline's patch buckets: trimmed to the real count before preparation
VALID_COUNT_KEYS = {"num_valid_patches": "pixel_values", "num_valid_video_patches": "pixel_values_videos"}
TARGET_PAD = {"labels": -100}  # other targets pad with 0


@dataclasses.dataclass(frozen=True)
class HostBatch:
    """One prepared global batch, as this process sees it (numpy)."""

    inputs: ModelInputs  # token arrays: this process's rows; vision: the global packed vision inputs
    targets: dict[str, np.ndarray]  # this process's rows, (B_local, L)
    global_rows: int
    row_lengths: np.ndarray  # (B_local,) real tokens per local row (FLOPs, tokens/s)
    grids: np.ndarray  # (n, 3) every image/video grid of the global batch


def data_parallel_size(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in LOGICAL_AXIS_RULES["act_batch"] if a in mesh.shape]))


def split_targets(batch: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """-> (model batch, targets). Trims pipeline patch-bucket padding (`num_valid_*`)."""
    model, targets = {}, {}
    for key, value in batch.items():
        if key in VALID_COUNT_KEYS or value is None:
            continue
        (model if key in MODEL_ONLY_KEYS else targets)[key] = np.asarray(value)
    for count_key, pixel_key in VALID_COUNT_KEYS.items():
        if count_key in batch and pixel_key in model:
            model[pixel_key] = model[pixel_key][: int(batch[count_key])]
    if "labels" not in targets:
        raise InputError("training batch has no 'labels' (B, L) field")
    return model, targets


def allgather(x: np.ndarray) -> np.ndarray:
    """(P, *x.shape) stack of every process's x (same shape everywhere)."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=False))


def allgather_ragged(x: np.ndarray) -> list[np.ndarray]:
    """Every process's x (leading dims may differ, trailing dims equal), in process order."""
    n = allgather(np.asarray([x.shape[0]], np.int64))[:, 0]
    padded = np.zeros((int(n.max()), *x.shape[1:]), x.dtype)
    padded[: x.shape[0]] = x
    return [g[: int(k)] for g, k in zip(allgather(padded), n)]


def _pad_to(a: np.ndarray, size: int, value, axis: int) -> np.ndarray:
    """Append `value` along `axis` up to `size`."""
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, size - a.shape[axis])
    return np.pad(a, pad, constant_values=value)


def _global_vision(config: QwenVLConfig, model_batch: dict, local_vision, pad_patches_to_multiple: int | None,
                   vision_buckets: bool):
    """(VisionInputs of the global batch, its grids). Processes contribute their pixels in process order."""
    if jax.process_count() == 1:
        grids = [model_batch[k] for k in ("image_grid_thw", "video_grid_thw") if k in model_batch]
        return local_vision, (np.concatenate(grids).astype(np.int64) if grids else np.zeros((0, 3), np.int64))
    raw = {}
    for key in VISION_RAW_KEYS:
        local = model_batch.get(key)
        if key.endswith("grid_thw"):
            local = np.zeros((0, 3), np.int64) if local is None else local.astype(np.int64)
        else:
            # pixels are normalized floats (kind 0), or raw uint8 (normalized on the device) whose rank is the
            # kind: 1 whole frames' bytes, 2 rows, 3 channels-last rows. Every process must agree
            kind = -1 if local is None else (local.ndim if local.dtype == np.uint8 else 0)
            kinds = set(allgather(np.asarray([kind], np.int64))[:, 0].tolist()) - {-1}
            if len(kinds) > 1:
                raise InputError(f"{key}: processes sent pixels of different kinds (0 float, uint8 as 1 frames / "
                                 f"2 rows / 3 channels-last rows: {sorted(kinds)})")
            kind = next(iter(kinds), 0)
            dtype = np.uint8 if kind else np.float32
            row = {1: (), 3: config.vision.channels_last_row}.get(kind, (config.vision.patch_dim,))
            local = np.zeros((0, *row), dtype) if local is None else local.astype(dtype)
        joined = np.concatenate(allgather_ragged(local))
        raw[key] = joined if len(joined) else None
    bucket_kw = {"buckets": True} if vision_buckets else {}
    vision = prepare_vision_inputs(config, pad_to_multiple=pad_patches_to_multiple, **bucket_kw, **raw)
    grids = [g for g in (raw["image_grid_thw"], raw["video_grid_thw"]) if g is not None]
    return vision, (np.concatenate(grids) if grids else np.zeros((0, 3), np.int64))


def prepare_host_batch(config: QwenVLConfig, batch: Mapping[str, np.ndarray], mesh: Mesh, *,
                       pad_batch_to_mesh: bool = False, pad_patches_to_multiple: int | None = None,
                       vision_buckets: bool = False) -> HostBatch:
    model_batch, targets = split_targets(batch)
    bucket_kw = {"vision_buckets": True} if vision_buckets else {}
    inputs, _ = prepare_inputs(config, model_batch, pad_patches_to_multiple=pad_patches_to_multiple, **bucket_kw)
    vision, grids = _global_vision(config, model_batch, inputs.vision, pad_patches_to_multiple, vision_buckets)
    ids, mask, pos = inputs.input_ids, inputs.attention_mask, inputs.position_ids
    for key, t in targets.items():
        if t.shape != ids.shape:
            raise InputError(f"batch field {key!r} has shape {t.shape}, expected (batch, length) {ids.shape}")
    procs = jax.process_count()
    if procs > 1:  # agree on one length: the longest local bucket
        length = int(allgather(np.asarray([ids.shape[1]], np.int64)).max())
        ids, mask = _pad_to(ids, length, 0, 1), _pad_to(mask, length, 0, 1)
        pos = _pad_to(pos, length, 0, 2)
        targets = {k: _pad_to(v, length, TARGET_PAD.get(k, 0), 1) for k, v in targets.items()}
    dp = data_parallel_size(mesh)
    rows = ids.shape[0] * procs
    if rows % dp:
        if not pad_batch_to_mesh:
            raise ShardingError(f"global batch of {rows} rows is not divisible by the data-parallel mesh size {dp} "
                                f"(mesh data x fsdp = {dict(mesh.shape)}); change data.batch_size or the mesh, "
                                f"or set data.pad_batch_to_mesh=true")
        if dp % procs:
            raise ShardingError(f"data-parallel size {dp} is not a multiple of the {procs} processes")
        local = -(-rows // dp) * dp // procs
        ids, mask = _pad_to(ids, local, 0, 0), _pad_to(mask, local, 0, 0)
        pos = _pad_to(pos, local, 0, 1)
        targets = {k: _pad_to(v, local, TARGET_PAD.get(k, 0), 0) for k, v in targets.items()}
        rows = local * procs
    inputs = ModelInputs(ids, mask, pos, vision)
    return HostBatch(inputs, targets, rows, mask.sum(axis=1), grids)


def place_host_batch(host: HostBatch, mesh: Mesh) -> tuple[ModelInputs, dict[str, jax.Array]]:
    """Global sharded arrays: rows over `act_batch`, vision replicated (`place_inputs`, `host_to_mesh`)."""
    inputs = place_inputs(host.inputs, mesh, global_rows=host.global_rows)
    targets = {k: host_to_mesh(v, mesh, ("act_batch",) + (None,) * (v.ndim - 1), (host.global_rows, *v.shape[1:]))
               for k, v in host.targets.items()}
    return inputs, targets
