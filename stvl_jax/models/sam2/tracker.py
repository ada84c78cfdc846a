"""SAM2 video tracking (transformers `Sam2VideoModel` + `Sam2VideoInferenceSession`, Meta's video predictor):
prompts on any frames for several objects, then propagation forward and/or in reverse.

Public API (stable for `stvl segment` and training):

    track(model, pixel_values, prompts, *, reverse=False, start_frame=None, both_directions=False,
          cond_capacity=None, bank_dtype=jnp.bfloat16) -> TrackResult
        pixel_values (T, 3, S, S) preprocessed frames (`host.preprocess`), S = the model's image_size;
        prompts {(frame, obj_id): Prompt | (points (N, 2), labels (N,))}: points in model-input pixels (x, y),
        labels 1 positive / 0 negative; Prompt(box=(x0, y0, x1, y1)) or Prompt(mask=(H, W) {0, 1}).
        Prompted frames are run first in frame order (as HF's session, one `model(session, frame_idx)` per
        prompted frame), then the video is propagated from `start_frame` (default: the earliest prompted frame)
        to the end, or to frame 0 with `reverse`; `both_directions` propagates forward then in reverse from the
        same start (frames before the first prompt get their masks too, as SAM2's users do).
    TrackResult(low_res_logits (T, O, S/4, S/4), object_score_logits (T, O), object_ids (O,), computed (T,) bool)
        the latest output of every frame (frames never reached: logits NO_OBJ_SCORE, scores -inf), objects in
        ascending id order.

    Tracker(model, pixel_values, object_ids, cond_capacity=..., compact_memory=False)  the session underneath:
        `add_prompts(frame, {obj_id: Prompt})` runs a prompted frame, `propagate(reverse=..., start_frame=...)`
        yields (frame, low_res_logits (O, S/4, S/4), object_score_logits (O,)); `result()`.

Each frame is one jitted `tracker_step.frame_step` over the fixed-capacity memory banks of all objects
(static shapes) after one jitted image-feature pass: tracked frames share one compilation (both directions),
prompted frames compile once per prompt shape (number of points; mask prompts). The memory banks store spatial
memories in bf16 as HF / Meta do (`bank_dtype`). For training, call `tracker_step.frame_features` and
`frame_step` directly (pure functions of the model and the banks; differentiable).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.errors import InputError
from stvl_jax.models.sam2.memory_bank import MemoryBank
from stvl_jax.models.sam2.prompt_encoder import antialias_bilinear_matrix
from stvl_jax.models.sam2.tracker_step import (INACTIVE, MASK, NO_OBJ_SCORE, POINTS, REUSE, TRACK, frame_features,
                                               frame_step)


@functools.lru_cache(maxsize=8)
def jitted_tracking(graphdef) -> tuple:
    """(features(state, pixel_values), step(state, banks, features, ...)): the jitted `frame_features` and
    `frame_step` of one model graph (step donates `banks`: use the returned ones). Cached by graph, so sessions
    over the same model share their compilations; the graph is closed over rather than passed as a static
    argument, which jit would hash on every call (~2.5 ms a call for Hiera-tiny's graph on a loaded 2-core CPU,
    twice per frame)."""
    features = jax.jit(lambda state, pixel_values: frame_features(nnx.merge(graphdef, state), pixel_values))
    step = jax.jit(lambda state, banks, feats, *args, **kw: frame_step(nnx.merge(graphdef, state), banks, feats,
                                                                       *args, **kw),
                   static_argnames=("cond_capacity", "num_frames", "spatial_slots"),
                   donate_argnums=1)  # the banks: the step writes one frame's row in place, no copy of the bank
    return features, step


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One object's prompt on one frame: points (N, 2) (x, y) model-input pixels with labels (N,) (1 positive,
    0 negative), and/or a box (x0, y0, x1, y1); or a mask (H, W) (resized to S x S as HF's processor does)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TrackResult:
    low_res_logits: np.ndarray  # (T, O, S/4, S/4)
    object_score_logits: np.ndarray  # (T, O)
    object_ids: tuple[int, ...]
    computed: np.ndarray  # (T,) bool


def as_prompt(p, where: str, image_size: int) -> tuple[str, np.ndarray, np.ndarray | None]:
    """-> ("points", coords (N, 2) f32, labels (N,) int32) or ("mask", (S, S) f32 {0, 1}, None); one clear
    `InputError` for a malformed prompt. A box becomes the points labelled 2, 3 before any clicks (HF)."""
    if isinstance(p, tuple):
        p = Prompt(points=p[0], labels=p[1])
    if not isinstance(p, Prompt):
        raise InputError(f"prompt {where} must be a Prompt or a (points, labels) tuple, got {type(p).__name__}")
    if p.mask is not None:
        if p.points is not None or p.box is not None:
            raise InputError(f"prompt {where}: a mask cannot be combined with points or a box")
        m = np.asarray(p.mask, np.float32)
        if m.ndim != 2:
            raise InputError(f"prompt {where}: mask has shape {m.shape}; expected (height, width)")
        if m.shape != (image_size, image_size):  # HF processor: antialiased bilinear, then >= 0.5
            rows, cols = antialias_bilinear_matrix(m.shape[0], image_size), antialias_bilinear_matrix(m.shape[1],
                                                                                                       image_size)
            m = ((rows @ (m > 0).astype(np.float32) @ cols.T) >= 0.5).astype(np.float32)
        return "mask", (m > 0).astype(np.float32), None
    coords, labels = [], []
    if p.box is not None:
        box = np.asarray(p.box, np.float32)
        if box.shape != (4,) or not (box[2] >= box[0] and box[3] >= box[1]):
            raise InputError(f"prompt {where}: box {box.tolist()} must be (x0, y0, x1, y1) with x1 >= x0, y1 >= y0")
        coords.append(box.reshape(2, 2))
        labels.append(np.array([2, 3], np.int32))
    if p.points is not None:
        pts = np.asarray(p.points, np.float32)
        lab = np.ones(len(pts), np.int32) if p.labels is None else np.asarray(p.labels, np.int32)
        if pts.ndim != 2 or pts.shape[1] != 2 or lab.shape != (len(pts),):
            raise InputError(f"prompt {where}: points {pts.shape} / labels {lab.shape}; expected (N, 2) and (N,)")
        if not np.isin(lab, (0, 1)).all():
            raise InputError(f"prompt {where}: point labels must be 1 (positive) or 0 (negative), got {lab.tolist()}")
        coords.append(pts)
        labels.append(lab)
    if not coords:
        raise InputError(f"prompt {where} is empty: give points, a box or a mask")
    return "points", np.concatenate(coords), np.concatenate(labels)


class Tracker:
    """A tracking session over one video (HF `Sam2VideoInferenceSession` + the model's per-frame forward)."""

    def __init__(self, model, pixel_values, object_ids, *, cond_capacity: int = 4, bank_dtype=jnp.bfloat16,
                 compact_memory: bool = False):
        """compact_memory: attend only to as many memory slots as the objects can have filled (the same output;
        the memory attention's cost grows with the slots, 10 with cond_capacity 4, as few as 1 early on), at
        one compilation of the tracking step per distinct slot count (at most cond_capacity + num_maskmem - 1,
        all reached within the first num_maskmem frames)."""
        cfg = model.config
        s = cfg.image_size
        pixel_values = jnp.asarray(pixel_values)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, s, s):
            raise InputError(f"pixel_values has shape {tuple(pixel_values.shape)}; expected (frames, 3, {s}, {s})")
        self.model, self.config = model, cfg
        self.pixel_values = pixel_values
        self.object_ids = tuple(int(i) for i in object_ids)
        self.num_frames = t = pixel_values.shape[0]
        o, e = len(self.object_ids), cfg.embedding_size
        self.cond_capacity = cond_capacity
        one = MemoryBank.empty(t, e * e, cfg.memory_bank.mem_dim, cfg.memory_bank.hidden_dim, dtype=bank_dtype)
        self.banks = jax.tree.map(lambda a: jnp.broadcast_to(a, (o, *a.shape)), one)
        self.active = np.zeros(o, bool)
        self.tracked = np.zeros((o, t), bool)  # HF frames_tracked_per_obj
        self.cond = np.zeros((o, t), bool)  # HF cond_frame_outputs keys
        self.low = np.full((t, o, 4 * e, 4 * e), NO_OBJ_SCORE, np.float32)
        self.scores = np.full((t, o), -np.inf, np.float32)
        self.computed = np.zeros(t, bool)
        self._graphdef, self._state = nnx.split(model)
        self._features, self._step = jitted_tracking(self._graphdef)
        self.compact_memory = compact_memory

    def _index(self, obj_id: int) -> int:
        if obj_id not in self.object_ids:
            raise InputError(f"object id {obj_id} is not one of this session's objects {list(self.object_ids)}")
        return self.object_ids.index(obj_id)

    def _run(self, frame: int, mode: np.ndarray, init: np.ndarray, binarize: bool, points=None, labels=None,
             masks=None, reverse: bool = False):
        kw = {}
        if points is not None:
            kw.update(points=jnp.asarray(points), labels=jnp.asarray(labels))
        if masks is not None:
            kw.update(masks=jnp.asarray(masks))
        features = self._features(self._state, self.pixel_values[frame:frame + 1])
        self.banks, out = self._step(self._state, self.banks, features, jnp.int32(frame),
                                     jnp.asarray(mode, jnp.int32), jnp.asarray(init), jnp.asarray(binarize),
                                     reverse=jnp.asarray(reverse), cond_capacity=self.cond_capacity,
                                     num_frames=self.num_frames, spatial_slots=self._spatial_slots(), **kw)
        upd = np.asarray(out.updated)
        self.low[frame][upd] = np.asarray(out.low_res_logits, np.float32)[upd]
        self.scores[frame][upd] = np.asarray(out.object_score_logits, np.float32)[upd]
        for i in np.nonzero(upd)[0]:
            if init[i]:
                self.cond[i, frame] = True
            else:
                self.tracked[i, frame] = True
        self.computed[frame] = True

    def _spatial_slots(self) -> int | None:
        """With compact_memory: an upper bound on any object's valid spatial memories given the frames its bank
        holds (the selected conditioning frames + up to num_maskmem - 1 previous ones, which are tracked frames,
        or unselected conditioning ones when max_cond_frame_num limits the selection)."""
        if not self.compact_memory:
            return None
        bank = self.config.memory_bank
        n_cond, n_tracked = self.cond.sum(axis=1), self.tracked.sum(axis=1)
        limited = bank.max_cond_frame_num != -1
        selected = np.minimum(n_cond, bank.max_cond_frame_num) if limited else n_cond
        previous = np.minimum(bank.num_maskmem - 1, n_tracked + (n_cond if limited else 0))
        return int(min(self.cond_capacity + bank.num_maskmem - 1, max(1, (selected + previous).max())))

    def _base_modes(self, frame: int) -> np.ndarray:
        """TRACK for registered objects, REUSE where the frame is one of their conditioning frames."""
        mode = np.where(self.active, TRACK, INACTIVE).astype(np.int32)
        mode[self.active & self.cond[:, frame]] = REUSE
        return mode

    def add_prompts(self, frame: int, prompts: Mapping[int, object]) -> tuple[np.ndarray, np.ndarray]:
        """Run prompted frame `frame`: {obj_id: prompt} (see `as_prompt`); the other registered objects are tracked
        on it (or keep their conditioning output). Returns (low_res_logits (O, 4e, 4e), scores (O,))."""
        if not 0 <= frame < self.num_frames:
            raise InputError(f"prompt frame {frame} is outside the video's {self.num_frames} frames")
        if not prompts:
            raise InputError(f"add_prompts(frame {frame}): no prompts given")
        s, o = self.config.image_size, len(self.object_ids)
        parsed = {self._index(k): as_prompt(v, f"(frame {frame}, object {k})", s) for k, v in prompts.items()}
        others = self._base_modes(frame)  # the registered objects without a prompt here
        for i in parsed:
            self.active[i] = True
        init = np.array([i in parsed and not self.tracked[i, frame] for i in range(o)])
        full = (self.cond.sum(axis=1) + (init & ~self.cond[:, frame])) > self.cond_capacity  # re-prompts reuse a slot
        if full.any():
            raise InputError(f"object {self.object_ids[int(np.argmax(full))]} would have more than cond_capacity="
                             f"{self.cond_capacity} prompted frames; make the Tracker with a larger cond_capacity")
        # one call per prompt shape (objects with different point counts cannot share the decoder's token axis);
        # the other objects go with the first call; memories are binarised when any object is prompted (HF)
        groups: dict[tuple, list[int]] = {}
        for i, (kind, a, _) in parsed.items():
            groups.setdefault((kind, a.shape), []).append(i)
        for g, ((kind, shape), members) in enumerate(groups.items()):
            mode = others.copy() if g == 0 else np.full(o, INACTIVE, np.int32)
            mode[members] = MASK if kind == "mask" else POINTS
            if kind == "mask":
                masks = np.zeros((o, s, s), np.float32)
                for i in members:
                    masks[i] = parsed[i][1]
                self._run(frame, mode, init, True, masks=masks)
            else:
                pts, lab = np.zeros((o, *shape), np.float32), -np.ones((o, shape[0]), np.int32)
                for i in members:
                    pts[i], lab[i] = parsed[i][1], parsed[i][2]
                self._run(frame, mode, init, True, points=pts, labels=lab)
        return self.low[frame].copy(), self.scores[frame].copy()

    def propagate(self, *, reverse: bool = False, start_frame: int | None = None,
                  max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """HF `propagate_in_video_iterator`: from `start_frame` (default: the earliest conditioning frame) to the
        end (or to frame 0 in reverse); yields (frame, low_res_logits (O, 4e, 4e), object_score_logits (O,))."""
        if start_frame is None:
            if not self.cond.any():
                raise InputError("no prompted frame yet: add prompts first or give start_frame")
            start_frame = int(np.nonzero(self.cond.any(axis=0))[0].min())
        if not 0 <= start_frame < self.num_frames:
            raise InputError(f"start_frame {start_frame} is outside the video's {self.num_frames} frames")
        n = self.num_frames if max_frames is None else max_frames
        if reverse:
            end = max(start_frame - n, 0)
            order = range(start_frame, end - 1, -1) if start_frame > 0 else range(0)
        else:
            order = range(start_frame, min(start_frame + n, self.num_frames - 1) + 1)
        o = len(self.object_ids)
        for frame in order:
            self._run(frame, self._base_modes(frame), np.zeros(o, bool), False, reverse=reverse)
            yield frame, self.low[frame].copy(), self.scores[frame].copy()

    def result(self) -> TrackResult:
        return TrackResult(self.low.copy(), self.scores.copy(), self.object_ids, self.computed.copy())


def track(model, pixel_values, prompts: Mapping[tuple[int, int], object], *, reverse: bool = False,
          start_frame: int | None = None, both_directions: bool = False, cond_capacity: int | None = None,
          bank_dtype=jnp.bfloat16) -> TrackResult:
    """Prompt, then propagate (see the module docstring)."""
    if not prompts:
        raise InputError("no prompts: give at least one (frame, object id) prompt")
    object_ids = sorted({int(obj) for _, obj in prompts})
    per_obj = {obj: {f for f, o in prompts if o == obj} for obj in object_ids}
    cap = cond_capacity or max(len(v) for v in per_obj.values())
    tracker = Tracker(model, pixel_values, object_ids, cond_capacity=cap, bank_dtype=bank_dtype)
    for frame in sorted({int(f) for f, _ in prompts}):
        tracker.add_prompts(frame, {obj: p for (f, obj), p in prompts.items() if f == frame})
    for _ in tracker.propagate(reverse=reverse, start_frame=start_frame):
        pass
    if both_directions:
        for _ in tracker.propagate(reverse=not reverse, start_frame=start_frame):
            pass
    return tracker.result()
