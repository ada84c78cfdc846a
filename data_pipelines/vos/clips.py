"""Promptable video segmentation clips from the synthetic set: per-entity ground-truth masklets with case labels.

A clip is `num_frames` frames taken every `frame_stride` source frames (8 x 2 at the set's 4 fps spans 3.5 s,
long enough for an exit and return). Every entity visible on at least one clip frame is an object of the clip.
Case labels are relative to the clip, i.e. to what a tracker prompted inside it sees:
  late_entry    not visible on the clip's first frame, visible later in it;
  exit_reentry  visible, then gone for >= 1 clip frame, then visible again, and the entity left the frame in
                between (an `exit` or `enter` action of the ground truth overlaps the gap);
  occlusion     such a gap with no exit: hidden behind another shape;
  twin          another entity of the same category (a distractor) is visible in the clip;
  plain         none of these.
`cases` lists every label that applies; `case` is the first of exit_reentry > late_entry > occlusion > twin
(else plain). Records that cannot be read are counted skips with a reason (`AnnotationError.reason`), or
raise in `strict` mode.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from data_pipelines.errors import AnnotationError, VideoDecodeError
from data_pipelines.rle import rle_decode
from stvl_jax.errors import ConfigError

CASES = ("exit_reentry", "late_entry", "occlusion", "twin")  # priority order of the primary label
SCHEMA = "stvl-synth-video/1"


@dataclass(frozen=True)
class VosClipConfig:
    num_frames: int | None = 8  # None: the whole video (at frame_stride)
    frame_stride: int = 2
    max_objects: int | None = None  # random subset per sampled clip (SAM2 trains with 3); None keeps all
    min_area: int = 1  # pixels for an entity to count as visible on a frame

    def __post_init__(self):
        if self.num_frames is not None and self.num_frames < 1:
            raise ConfigError(f"vos num_frames must be >= 1 or None, got {self.num_frames}")
        if self.frame_stride < 1:
            raise ConfigError(f"vos frame_stride must be >= 1, got {self.frame_stride}")
        if self.max_objects is not None and self.max_objects < 1:
            raise ConfigError(f"vos max_objects must be >= 1 or None, got {self.max_objects}")
        if self.min_area < 1:
            raise ConfigError(f"vos min_area must be >= 1, got {self.min_area}")


@dataclass
class VosClip:
    """One clip. O objects, T frames of H x W.

    frame_indices (T,) source frame indices; masks (O, T, H, W) bool; entity_ids (O,); first_visible (O,)
    clip-relative index of each object's first visible frame; cases [O] lists of labels; case [O] primary
    label; categories [O]. `frames` (T, H, W, 3) uint8 when decoded.
    """

    vid: str
    video: str  # absolute path of the mp4
    fps: float
    frame_indices: np.ndarray
    masks: np.ndarray
    entity_ids: np.ndarray
    first_visible: np.ndarray
    cases: list[list[str]]
    case: list[str]
    categories: list[str]
    frames: np.ndarray | None = None

    @property
    def num_objects(self) -> int:
        return int(self.masks.shape[0])


@dataclass
class Video:
    """A validated annotation: per-entity masks of every frame, decoded once."""

    vid: str
    video: str
    fps: float
    masks: np.ndarray  # (E, N, H, W) bool, entities in annotation order
    entity_ids: np.ndarray  # (E,)
    categories: list[str]
    actions: list[dict]

    @property
    def num_frames(self) -> int:
        return int(self.masks.shape[1])


def load_video_annotation(path: str) -> Video:
    """Read and validate `annotations/<vid>.json` -> Video. Raises AnnotationError naming the file and reason."""
    src = str(path)
    try:
        with open(path) as f:
            gt = json.load(f)
    except OSError as e:
        raise AnnotationError("unreadable", f"cannot read ({e.strerror or e})", src) from None
    except json.JSONDecodeError as e:
        raise AnnotationError("bad_json", f"not JSON ({e.msg} at line {e.lineno})", src) from None
    if not isinstance(gt, dict) or gt.get("schema") != SCHEMA:
        got = gt.get("schema") if isinstance(gt, dict) else type(gt).__name__
        raise AnnotationError("bad_schema", f"expected schema {SCHEMA!r}, got {got!r}", src)
    for key in ("vid", "video", "fps", "width", "height", "num_frames", "entities", "frames"):
        if key not in gt:
            raise AnnotationError("missing_field", f"lacks {key!r}", src)
    h, w, n = gt["height"], gt["width"], gt["num_frames"]
    if len(gt["frames"]) != n:
        raise AnnotationError("frame_count_mismatch", f"{len(gt['frames'])} frames listed, num_frames is {n}", src)
    try:
        ids = [int(e["id"]) for e in gt["entities"]]
        cats = [str(e["category"]) for e in gt["entities"]]
    except (KeyError, TypeError, ValueError) as e:
        raise AnnotationError("missing_field", f"entity without id/category ({e!r})", src) from None
    row = {eid: i for i, eid in enumerate(ids)}
    masks = np.zeros((len(ids), n, h, w), bool)
    for k, fr in enumerate(gt["frames"]):
        for o in fr.get("objects", ()):
            if o.get("entity") not in row:
                raise AnnotationError("unknown_entity", f"frame {k} has a mask of entity {o.get('entity')!r}, "
                                      f"not among the entities {ids}", src)
            try:
                m = rle_decode(o["rle"])
            except (KeyError, TypeError, ValueError) as e:
                raise AnnotationError("bad_rle", f"frame {k} entity {o['entity']}: bad RLE ({e})", src) from None
            if m.shape != (h, w):
                raise AnnotationError("bad_rle", f"frame {k} entity {o['entity']}: mask {m.shape} in a {h}x{w} "
                                      "video", src)
            masks[row[o["entity"]], k] = m
    video = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), gt["video"]))
    return Video(vid=str(gt["vid"]), video=video, fps=float(gt["fps"]), masks=masks,
                 entity_ids=np.asarray(ids, np.int64), categories=cats, actions=list(gt.get("actions", [])))


def clip_span(cfg: VosClipConfig, num_frames: int) -> int:
    """Source frames covered by one clip (first to last index, inclusive)."""
    t = cfg.num_frames if cfg.num_frames is not None else -(-num_frames // cfg.frame_stride)
    return (t - 1) * cfg.frame_stride + 1


def clip_windows(cfg: VosClipConfig, num_frames: int) -> list[np.ndarray]:
    """Deterministic non-overlapping clips tiling the video from frame 0 (a partial tail is left out)."""
    span = clip_span(cfg, num_frames)
    t = (span - 1) // cfg.frame_stride + 1
    return [s + cfg.frame_stride * np.arange(t) for s in range(0, num_frames - span + 1, span)]


def random_window(cfg: VosClipConfig, num_frames: int, rng: np.random.Generator) -> np.ndarray | None:
    """A clip at a uniformly random start, or None when the video is shorter than a clip."""
    span = clip_span(cfg, num_frames)
    if span > num_frames:
        return None
    t = (span - 1) // cfg.frame_stride + 1
    return int(rng.integers(0, num_frames - span + 1)) + cfg.frame_stride * np.arange(t)


def _left_frame(actions: list[dict], entity: int, t0: float, t1: float) -> bool:
    """An exit or entry of `entity` overlaps the time span [t0, t1] (it was out of frame, not hidden)."""
    return any(a.get("entity") == entity and a.get("action") in ("exit", "enter")
               and a.get("start", np.inf) <= t1 and a.get("end", -np.inf) >= t0 for a in actions)


def label_cases(visible: np.ndarray, times: np.ndarray, entity: int, category: str, others_visible: list[str],
                actions: list[dict]) -> list[str]:
    """Case labels of one object from its (T,) visibility on the clip frames (see the module docstring)."""
    cases = []
    idx = np.flatnonzero(visible)
    gaps = [(a, b) for a, b in zip(idx[:-1], idx[1:]) if b > a + 1]  # last seen a, seen again b
    exits = [g for g in gaps if _left_frame(actions, entity, times[g[0]], times[g[1]])]
    if exits:
        cases.append("exit_reentry")
    if not visible[0]:
        cases.append("late_entry")
    if len(exits) < len(gaps):
        cases.append("occlusion")
    if category in others_visible:
        cases.append("twin")
    return cases


def make_clip(video: Video, frame_indices, cfg: VosClipConfig = VosClipConfig(),
              rng: np.random.Generator | None = None) -> VosClip:
    """The objects visible in the given frames of `video` (a random subset of `max_objects` when rng is given)."""
    fi = np.asarray(frame_indices, np.int64)
    m = video.masks[:, fi]  # (E, T, H, W)
    vis = m.sum(axis=(2, 3)) >= cfg.min_area  # (E, T)
    keep = np.flatnonzero(vis.any(axis=1))
    if cfg.max_objects is not None and len(keep) > cfg.max_objects:
        if rng is None:
            keep = keep[:cfg.max_objects]
        else:
            keep = np.sort(rng.choice(keep, size=cfg.max_objects, replace=False))
    times = fi / video.fps
    present = set(np.flatnonzero(vis.any(axis=1)).tolist())
    cases, first = [], []
    for e in keep:
        others = [video.categories[o] for o in present if o != e]
        c = label_cases(vis[e], times, int(video.entity_ids[e]), video.categories[e], others, video.actions)
        cases.append(c)
        first.append(int(np.argmax(vis[e])))
    return VosClip(vid=video.vid, video=video.video, fps=video.fps, frame_indices=fi,
                   masks=m[keep] & vis[keep][:, :, None, None], entity_ids=video.entity_ids[keep],
                   first_visible=np.asarray(first, np.int64), cases=cases,
                   case=[next((c for c in CASES if c in cs), "plain") for cs in cases],
                   categories=[video.categories[e] for e in keep])


@dataclass
class VosReader:
    """Clips of one split of a synthetic set directory (`stvl data synth --out DIR`).

    `clips()` tiles every video with `clip_windows` (evaluation); `sample(rng)` draws a random video and window
    (training). Unreadable annotations, videos shorter than a clip, clips without a visible entity and (with
    `decode=True`) undecodable videos are skipped and counted in `skipped` by reason; `strict` raises instead.
    """

    root: str
    split: str = "train"
    cfg: VosClipConfig = field(default_factory=VosClipConfig)
    decode: bool = False
    strict: bool = False
    skipped: Counter = field(default_factory=Counter)

    def __post_init__(self):
        manifest = os.path.join(self.root, "manifest.json")
        try:
            with open(manifest) as f:
                splits = json.load(f)["splits"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise AnnotationError("bad_manifest", f"not a synthetic set manifest ({type(e).__name__}: {e})",
                                  manifest) from None
        if self.split not in splits:
            raise AnnotationError("unknown_split", f"no split {self.split!r} (has {sorted(splits)})", manifest)
        self.vids = list(splits[self.split])
        self._cache: dict[str, Video | None] = {}

    def _skip(self, reason: str, err: Exception) -> None:
        if self.strict:
            raise err
        self.skipped[reason] += 1

    def video(self, vid: str) -> Video | None:
        """The decoded annotation of `vid` (cached), or None (counted) when it cannot be read."""
        if vid not in self._cache:
            try:
                self._cache[vid] = load_video_annotation(os.path.join(self.root, "annotations", vid + ".json"))
            except AnnotationError as e:
                self._skip(e.reason, e)
                self._cache[vid] = None
        return self._cache[vid]

    def _finish(self, clip: VosClip) -> VosClip | None:
        if clip.num_objects == 0:
            self._skip("no_visible_entity", AnnotationError(
                "no_visible_entity", f"no entity visible in frames {clip.frame_indices.tolist()}", clip.vid))
            return None
        if self.decode:
            from data_pipelines.video import decode_frames

            try:
                clip.frames = decode_frames(clip.video, clip.frame_indices)
            except VideoDecodeError as e:
                self._skip("video_decode", e)
                return None
        return clip

    def clips(self):
        """Every clip of the split, deterministic order (video order of the manifest, then time)."""
        for vid in self.vids:
            v = self.video(vid)
            if v is None:
                continue
            windows = clip_windows(self.cfg, v.num_frames)
            if not windows:
                self._skip("video_too_short", AnnotationError(
                    "video_too_short", f"{v.num_frames} frames, a clip spans {clip_span(self.cfg, v.num_frames)}",
                    vid))
            for w in windows:
                clip = self._finish(make_clip(v, w, self.cfg))
                if clip is not None:
                    yield clip

    def sample(self, rng: np.random.Generator, max_tries: int = 100) -> VosClip:
        """A random clip (random video, window and object subset) with at least one object."""
        for _ in range(max_tries):
            v = self.video(self.vids[int(rng.integers(len(self.vids)))]) if self.vids else None
            if v is None:
                continue
            w = random_window(self.cfg, v.num_frames, rng)
            if w is None:
                self._skip("video_too_short", AnnotationError("video_too_short", f"{v.num_frames} frames", v.vid))
                continue
            clip = self._finish(make_clip(v, w, self.cfg, rng))
            if clip is not None:
                return clip
        raise AnnotationError("no_usable_clip", f"no usable clip in {max_tries} draws from split {self.split!r} "
                              f"(skipped so far: {dict(self.skipped)})", self.root)
