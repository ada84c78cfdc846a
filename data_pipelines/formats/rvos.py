"""Referring video object segmentation sets (what VIRST trains and evaluates on): MeViS, Ref-YouTube-VOS, ReVOS, and
the synthetic set exported in MeViS's layout (`stvl data synth --export rvos`).

Layouts (as the official releases unpack; `split` is the folder or file name part):

    mevis      ROOT/SPLIT/meta_expressions.json, ROOT/SPLIT/mask_dict.json (absent on the server-only `valid`),
               ROOT/SPLIT/JPEGImages/VID/FRAME.jpg                       (splits train, valid_u, valid)
    refytvos   ROOT/meta_expressions/SPLIT/meta_expressions.json, ROOT/SPLIT/JPEGImages/VID/FRAME.jpg,
               ROOT/SPLIT/Annotations/VID/FRAME.png: palette PNG, pixel value = the expression's obj_id
               (train only; the valid split is scored by the server, and its videos are those of the valid
               expressions file minus those of meta_expressions/test/, as the competition defines it)
    revos      ROOT/meta_expressions_SPLIT_.json, ROOT/mask_dict.json, ROOT/JPEGImages/VID/FRAME.jpg
               (VID may hold a "/", e.g. "MOSE/0a43..."; splits train, valid)
    synthetic  ROOT/rvos/SPLIT/ in the mevis layout (ROOT: a `stvl data synth` set; splits train, val, test)

meta_expressions.json: {"videos": {VID: {"frames": [FRAME, ...], "expressions": {EXP_ID: {"exp": text,
"obj_id": [...] (refytvos: one id), "anno_id": [...] (mevis, revos, synthetic), "type_id": 0|1|2 (revos: referring,
reasoning, no target), "kind": colour|shape|timing (synthetic)}}}}}. mask_dict.json: {ANNO_ID: [COCO RLE or null
per frame of the video]}; an expression's target is the union of its anno_ids' masks (MeViS and ReVOS
expressions may name several objects, or none).

Bad records are skipped and counted by reason (`skipped`, the first message of each in `first_skip`), or raise
with `strict`: `missing_field`, `bad_field`, `unknown_anno_id`, `frame_count_mismatch`, `no_frames`; a bad mask or
a missing frame surfaces when it is read (`bad_rle`, `bad_mask`, `missing_file`) as an AnnotationError /
VideoDecodeError the caller counts.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from data_pipelines.errors import AnnotationError, VideoDecodeError
from data_pipelines.rle import coco_rle_decode

FORMATS = ("mevis", "refytvos", "revos", "synthetic")
DEFAULT_SPLIT = {"mevis": "valid_u", "refytvos": "valid", "revos": "valid", "synthetic": "test"}
REVOS_TYPES = {0: "referring", 1: "reasoning", 2: "no_target"}
SYNTH_KINDS = ("colour", "shape", "timing")
FRAME_EXT = ".jpg"


@dataclass(frozen=True)
class RvosExpression:
    """One referring expression of one video. `targets`: anno_ids (mask_dict keys) or, for refytvos, the obj_id
    (palette value); `kind`: the split / query kind it is reported under ("referring" unless the set says)."""

    vid: str
    exp_id: str
    text: str
    frames: tuple[str, ...]
    targets: tuple[str, ...]
    kind: str = "referring"

    @property
    def key(self) -> str:
        return f"{self.vid}/{self.exp_id}"


def layout(root: str, fmt: str, split: str) -> dict[str, str | None]:
    """{"meta", "masks" (mask_dict.json, or the Annotations folder for refytvos), "frames"} paths of a split."""
    if fmt == "mevis":
        d = os.path.join(root, split)
        return {"meta": os.path.join(d, "meta_expressions.json"), "masks": os.path.join(d, "mask_dict.json"),
                "frames": os.path.join(d, "JPEGImages")}
    if fmt == "synthetic":
        return layout(os.path.join(root, "rvos"), "mevis", split)
    if fmt == "refytvos":
        return {"meta": os.path.join(root, "meta_expressions", split, "meta_expressions.json"),
                "masks": os.path.join(root, split, "Annotations"), "frames": os.path.join(root, split, "JPEGImages")}
    if fmt == "revos":
        return {"meta": os.path.join(root, f"meta_expressions_{split}_.json"),
                "masks": os.path.join(root, "mask_dict.json"), "frames": os.path.join(root, "JPEGImages")}
    raise AnnotationError("bad_format", f"unknown referring-segmentation format {fmt!r} (one of {FORMATS})", root)


def _load_json(path: str, what: str):
    if not os.path.isfile(path):
        raise AnnotationError("missing_file", f"{what} not found", path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError("bad_json", f"{what} is not JSON ({e})", path) from None


def _id_list(value, name: str, src: str) -> tuple[str, ...]:
    """An id list field (a list of ints/strings, or one id) -> the ids as strings."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in items):
        raise AnnotationError("bad_field", f"{name} must be an id or a list of ids, got {value!r}", src)
    return tuple(str(v) for v in items)


@dataclass
class RvosDataset:
    """The expressions of one split (`expressions`, in file order) and how to read their frames and masks."""

    root: str
    format: str
    split: str | None = None
    strict: bool = False
    skipped: Counter = field(default_factory=Counter)
    first_skip: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise AnnotationError("bad_format", f"unknown referring-segmentation format {self.format!r} "
                                  f"(one of {', '.join(FORMATS)})", self.root)
        self.split = self.split or DEFAULT_SPLIT[self.format]
        self.paths = layout(self.root, self.format, self.split)
        meta = _load_json(self.paths["meta"], f"{self.format} expressions of split {self.split!r}")
        if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
            raise AnnotationError("bad_schema", "expected {\"videos\": {VID: {...}}}", self.paths["meta"])
        masks = self.paths["masks"]
        self.mask_dict = None
        if self.format != "refytvos" and os.path.isfile(masks):
            self.mask_dict = _load_json(masks, "mask_dict.json")
            if not isinstance(self.mask_dict, dict):
                raise AnnotationError("bad_schema", "expected {ANNO_ID: [RLE or null per frame]}", masks)
        self.has_masks = self.mask_dict is not None or (self.format == "refytvos" and os.path.isdir(masks))
        self.excluded = self._competition_test_videos()
        self.expressions: list[RvosExpression] = []
        for vid, video in meta["videos"].items():
            if str(vid) not in self.excluded:
                self._add_video(str(vid), video, f"{self.paths['meta']}[{vid}]")

    def _competition_test_videos(self) -> set[str]:
        """Ref-YouTube-VOS's valid expressions file also lists the 305 test videos; the valid split is the other
        202 (what ReferFormer, VISA and VIRST evaluate, and what the server scores): the videos of
        meta_expressions/test/meta_expressions.json, when present, are left out."""
        if self.format != "refytvos" or self.split != "valid":
            return set()
        path = os.path.join(self.root, "meta_expressions", "test", "meta_expressions.json")
        if not os.path.isfile(path):
            return set()
        test = _load_json(path, "Ref-YouTube-VOS test expressions")
        if not isinstance(test, dict) or not isinstance(test.get("videos"), dict):
            raise AnnotationError("bad_schema", "expected {\"videos\": {VID: {...}}}", path)
        return set(map(str, test["videos"]))

    def _skip(self, err: AnnotationError) -> None:
        if self.strict:
            raise err
        self.skipped[err.reason] += 1
        self.first_skip.setdefault(err.reason, str(err))

    def _add_video(self, vid: str, video, src: str) -> None:
        try:
            if not isinstance(video, dict) or "expressions" not in video or "frames" not in video:
                raise AnnotationError("missing_field", "a video needs 'frames' and 'expressions'", src)
            frames, exps = video["frames"], video["expressions"]
            if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
                raise AnnotationError("bad_field", "'frames' must be a list of frame names", src)
            if not frames:
                raise AnnotationError("no_frames", "the video lists no frame", src)
            if not isinstance(exps, dict):
                raise AnnotationError("bad_field", "'expressions' must be an object {EXP_ID: {...}}", src)
        except AnnotationError as e:
            self._skip(e)
            return
        # Ref-YouTube-VOS and MeViS list frames in name order; the readers of the releases sort them too.
        frames = tuple(sorted(frames))
        for exp_id, exp in exps.items():
            try:
                self.expressions.append(self._expression(vid, str(exp_id), exp, frames, f"{src}[{exp_id}]"))
            except AnnotationError as e:
                self._skip(e)

    def _expression(self, vid: str, exp_id: str, exp, frames: tuple[str, ...], src: str) -> RvosExpression:
        if not isinstance(exp, dict):
            raise AnnotationError("bad_field", "an expression must be an object", src)
        text = exp.get("exp")
        if not isinstance(text, str) or not text.strip():
            raise AnnotationError("missing_field", "expression without text 'exp'", src)
        kind = "referring"
        if self.format == "revos":
            if exp.get("type_id") not in REVOS_TYPES:
                raise AnnotationError("bad_field", f"type_id must be one of {sorted(REVOS_TYPES)}, got "
                                      f"{exp.get('type_id')!r}", src)
            kind = REVOS_TYPES[exp["type_id"]]
        elif self.format == "synthetic":
            if exp.get("kind") not in SYNTH_KINDS:
                raise AnnotationError("bad_field", f"kind must be one of {SYNTH_KINDS}, got {exp.get('kind')!r}", src)
            kind = exp["kind"]
        if self.format == "refytvos":
            if "obj_id" not in exp:
                raise AnnotationError("missing_field", "expression without 'obj_id'", src)
            targets = _id_list(exp["obj_id"], "obj_id", src)
            if len(targets) != 1 or not targets[0].isdigit() or not 0 < int(targets[0]) < 256:
                raise AnnotationError("bad_field", f"obj_id must be one palette index 1..255, got {exp['obj_id']!r}",
                                      src)
        else:
            if "anno_id" not in exp:
                if self.mask_dict is not None:
                    raise AnnotationError("missing_field", "expression without 'anno_id'", src)
                targets = ()
            else:
                targets = _id_list(exp["anno_id"], "anno_id", src)
            if self.mask_dict is not None:
                for a in targets:
                    runs = self.mask_dict.get(a)
                    if runs is None:
                        raise AnnotationError("unknown_anno_id", f"anno_id {a!r} is not in mask_dict.json", src)
                    if not isinstance(runs, list) or len(runs) != len(frames):
                        n = len(runs) if isinstance(runs, list) else type(runs).__name__
                        raise AnnotationError("frame_count_mismatch", f"anno_id {a!r} has {n} masks for "
                                              f"{len(frames)} frames", src)
        return RvosExpression(vid, exp_id, " ".join(text.split()), frames, targets, kind)

    # ---------------------------------------------------------------------------------------------- reading
    def frame_path(self, expr: RvosExpression, i: int) -> str:
        return os.path.join(self.paths["frames"], expr.vid, expr.frames[i] + FRAME_EXT)

    def read_frames(self, expr: RvosExpression, indices=None) -> np.ndarray:
        """(T, H, W, 3) uint8 of the given frame indices (all by default); a missing or unreadable frame image
        is a VideoDecodeError naming it; frames of one video must share a size."""
        from PIL import Image, UnidentifiedImageError

        idx = range(len(expr.frames)) if indices is None else indices
        out = []
        for i in idx:
            path = self.frame_path(expr, int(i))
            if not os.path.isfile(path):
                raise VideoDecodeError(path, "file not found")
            try:
                with Image.open(path) as im:
                    out.append(np.asarray(im.convert("RGB")))
            except (OSError, UnidentifiedImageError) as e:
                raise VideoDecodeError(path, f"not a readable image ({e})") from None
            if out[-1].shape != out[0].shape:
                raise VideoDecodeError(path, f"frame of size {out[-1].shape[:2]} in a video of {out[0].shape[:2]}")
        return np.stack(out)

    def read_masks(self, expr: RvosExpression, size: tuple[int, int], indices=None) -> np.ndarray:
        """(T, H, W) bool: the union of the expression's target masks on the given frames (all by default), at
        the frames' `size` (H, W). AnnotationError (`bad_rle` / `bad_mask`) naming the mask when one is broken."""
        if not self.has_masks:
            raise AnnotationError("no_masks", f"split {self.split!r} has no ground-truth masks (server-scored)",
                                  self.paths["masks"])
        idx = list(range(len(expr.frames)) if indices is None else indices)
        out = np.zeros((len(idx), *size), bool)
        for j, i in enumerate(idx):
            for t in expr.targets:
                m = self._mask(expr, t, int(i))
                if m is None:
                    continue
                if m.shape != tuple(size):
                    raise AnnotationError("bad_mask", f"mask of {t!r} on frame {expr.frames[i]} is {m.shape}, the "
                                          f"frames are {tuple(size)}", expr.key)
                out[j] |= m
        return out

    def _mask(self, expr: RvosExpression, target: str, i: int) -> np.ndarray | None:
        if self.format == "refytvos":
            from PIL import Image, UnidentifiedImageError

            path = os.path.join(self.paths["masks"], expr.vid, expr.frames[i] + ".png")
            if not os.path.isfile(path):
                return None  # Ref-YouTube-VOS annotates a subset of the frames
            try:
                with Image.open(path) as im:
                    if im.mode not in ("P", "L"):
                        raise AnnotationError("bad_mask", f"a palette (P) or grey (L) PNG, got mode {im.mode}", path)
                    return np.asarray(im) == int(target)
            except (OSError, UnidentifiedImageError) as e:
                raise AnnotationError("bad_mask", f"not a readable PNG ({e})", path) from None
        rle = self.mask_dict[target][i]
        if rle is None:
            return None
        try:
            return coco_rle_decode(rle)
        except (ValueError, TypeError) as e:
            raise AnnotationError("bad_rle", f"anno_id {target!r} frame {i}: bad RLE ({e})", expr.key) from None

    def video_targets(self, vid: str) -> list[tuple[str, ...]]:
        """The distinct target sets of a video's expressions (for the other-entity control)."""
        out = []
        for e in self.expressions:
            if e.vid == vid and e.targets and e.targets not in out:
                out.append(e.targets)
        return out
