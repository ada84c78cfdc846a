"""Grain pipeline of VIRST samples: one referring expression of a referring-segmentation set (`formats.rvos`) ->
the VLM's video (Qwen-VL preprocessing), the SAM2 frames (SAM2 preprocessing) and the target masks on them.

    from data_pipelines.grain.rvos import RvosPipelineConfig, make_rvos_pipeline
    it = make_rvos_pipeline(RvosPipelineConfig(root="synth/", format="synthetic", split="train", batch_size=2))
    batch = next(it); state = it.get_state(); ...; it.set_state(state)

Per sample (VIRST's data/rvos_dataset.py, "uniform" policy): `vlm_frames` frames, one drawn at random in each of
that many equal spans of the video (a shorter video repeats its last frame); `seg_frames` of them, a random
subset kept in time order, go to SAM2. Batch (B samples; every shape static for a given config):

    pixel_values_videos (B*t*h*w, C*T*P*P) float32 (or uint8 rows, `pixel_dtype`)   HF Qwen-VL rows, concatenated
    video_grid_thw (B, 3) int64                 num_valid_video_patches () int32 (with `patch_buckets`)
    sam2_pixel_values (B, S, 3, I, I) float32   SAM2's input of the segmentation frames (I = image_size)
    masks (B, S, I, I) bool                     the expression's target (union of its objects), nearest-resized
                                                to I x I as VIRST's SAM2 mask transform does
    frame_indices (B, F) int64                  source frames of the VLM video
    seg_index (B, S) int64                      which of the F VLM frames each SAM2 frame is
    expression (B,) object (str)                the text;  key (B,) object (str) "VID/EXP_ID"

`sample_fn(sample, rng)` adds the model's own arrays to each sample (VIRST's prompt with its [SEG] tokens, padded
to a static length, is the model's business, not this pipeline's).

Static buckets: every video is resized to `vlm_size` (h, w) when given, so the VLM rows of a batch have one
count; without it each video gets Qwen-VL's own size (smart_resize) and the rows are zero-padded to the smallest
of `patch_buckets` (then required). A sample whose frames or masks cannot be read is skipped and counted
(`stats["skipped"]`), as the other pipelines do. `get_state()` / `set_state()` restore the exact following
batches (Grain's iterator state, taken between batches, plus the counters).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grain
import numpy as np

from data_pipelines.errors import AnnotationError, VideoDecodeError, skip_reason
from data_pipelines.formats.rvos import RvosDataset
from data_pipelines.grain.collate import pick_bucket
from stvl_jax.errors import ConfigError
from stvl_jax.models.qwen_vl.host.preprocess import PIXEL_DTYPES, PreprocessConfig, process_video
from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig, preprocess_frames


@dataclass(frozen=True)
class RvosPipelineConfig:
    root: str
    format: str = "synthetic"
    split: str | None = None
    vlm_frames: int = 8
    seg_frames: int = 4
    vlm_size: tuple[int, int] | None = None
    patch_buckets: tuple[int, ...] | None = None
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig.qwen3_vl)
    sam2: Sam2PreprocessConfig = dataclasses.field(default_factory=Sam2PreprocessConfig)
    pixel_dtype: str = "float32"
    batch_size: int = 2
    shuffle: bool = True
    seed: int = 0
    num_epochs: int | None = 1  # None: repeat forever
    drop_remainder: bool = True
    strict: bool = False
    # (sample, rng) -> more arrays for the sample (e.g. the prompt's token ids, padded to a static length): the
    # model's text side, so this pipeline stays model-agnostic; must be picklable, its arrays one shape per key
    sample_fn: Callable[[dict, np.random.Generator], dict] | None = None

    def __post_init__(self):
        if self.vlm_frames < 1 or not 1 <= self.seg_frames <= self.vlm_frames:
            raise ConfigError(f"rvos pipeline: need 1 <= seg_frames ({self.seg_frames}) <= vlm_frames "
                              f"({self.vlm_frames})")
        if self.batch_size < 1:
            raise ConfigError(f"rvos pipeline: batch_size must be positive, got {self.batch_size}")
        if self.pixel_dtype not in PIXEL_DTYPES:
            raise ConfigError(f"rvos pipeline: pixel_dtype must be one of {PIXEL_DTYPES}, got {self.pixel_dtype!r}")
        if self.vlm_size is not None:
            f = self.preprocess.factor
            if len(self.vlm_size) != 2 or any(v <= 0 or v % f for v in self.vlm_size):
                raise ConfigError(f"rvos pipeline: vlm_size must be (h, w), multiples of {f}, got {self.vlm_size}")
        elif not self.patch_buckets:
            raise ConfigError("rvos pipeline: without a fixed vlm_size the VLM rows vary per video; give "
                              "patch_buckets (static row counts to pad to)")


def sample_frames(n: int, vlm_frames: int, seg_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(F,) source frame indices (one random frame per equal span; a short video repeats its last frame) and
    (S,) sorted positions among them of the SAM2 frames."""
    if n >= vlm_frames:
        edges = np.linspace(0, n, vlm_frames + 1).astype(np.int64)
        idx = np.array([rng.integers(a, max(a + 1, b)) for a, b in zip(edges[:-1], edges[1:])], np.int64)
    else:
        idx = np.concatenate([np.arange(n), np.full(vlm_frames - n, n - 1)]).astype(np.int64)
    seg = np.sort(rng.choice(vlm_frames, size=seg_frames, replace=False)).astype(np.int64)
    return idx, seg


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W) bool -> (T, size, size) bool, nearest neighbour at pixel centres."""
    t, h, w = masks.shape
    ys = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return masks[:, ys][:, :, xs]


TEXT_KEYS = ("expression", "key")
SKIP_FLUSH = 64  # skipped samples a batch carries at most before it goes up without samples


class BuildRvosSample(grain.transforms.RandomMap):
    """Expression index -> sample dict, or a skip marker {"__skip__": reason, "message", "source"}."""

    def __init__(self, cfg: RvosPipelineConfig):
        self.cfg = cfg
        self._ds = None

    def __getstate__(self):
        return {"cfg": self.cfg, "_ds": None}

    @property
    def ds(self) -> RvosDataset:
        if self._ds is None:
            self._ds = RvosDataset(self.cfg.root, self.cfg.format, self.cfg.split)
        return self._ds

    def random_map(self, index, rng: np.random.Generator):
        cfg, ds = self.cfg, self.ds
        expr = ds.expressions[int(index)]
        try:
            idx, seg = sample_frames(len(expr.frames), cfg.vlm_frames, cfg.seg_frames, rng)
            frames = ds.read_frames(expr, idx)
            masks = ds.read_masks(expr, frames.shape[1:3], idx[seg])
        except (AnnotationError, VideoDecodeError) as e:
            return {"__skip__": skip_reason(e), "message": str(e), "source": expr.key}
        pv, grid = process_video(frames, cfg.preprocess, cfg.vlm_size, dtype=np.dtype(cfg.pixel_dtype))
        sample = {"pixel_values_videos": pv, "video_grid_thw": grid,
                  "sam2_pixel_values": preprocess_frames(frames[seg], cfg.sam2),
                  "masks": resize_masks(masks, cfg.sam2.image_size), "frame_indices": idx, "seg_index": seg,
                  "expression": expr.text, "key": expr.key}
        if cfg.sample_fn is not None:
            sample.update(cfg.sample_fn(sample, rng))
        return sample


def collate_rvos(samples: list[dict], patch_buckets=None) -> dict:
    """Stack per-sample arrays; concatenate the VLM rows and grids (HF layout), padded to a patch bucket."""
    out = {k: np.array([s[k] for s in samples], dtype=object) if k in TEXT_KEYS else np.stack([s[k] for s in samples])
           for k in samples[0] if k not in ("pixel_values_videos", "video_grid_thw")}
    rows = np.concatenate([s["pixel_values_videos"] for s in samples])
    out["video_grid_thw"] = np.concatenate([s["video_grid_thw"] for s in samples])
    if patch_buckets:
        n = len(rows)
        padded = np.zeros((pick_bucket(n, patch_buckets), *rows.shape[1:]), rows.dtype)
        padded[:n] = rows
        rows = padded
        out["num_valid_video_patches"] = np.int32(n)
    out["pixel_values_videos"] = rows
    return out


class _Batches(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, cfg: RvosPipelineConfig):
        super().__init__(parent)
        self.cfg = cfg

    def __iter__(self):
        return _BatchesIterator(self._parent.__iter__(), self.cfg)


class _BatchesIterator(grain.DatasetIterator):
    """Groups `batch_size` good samples; skip markers met on the way travel with the batch (alone at the end)."""

    def __init__(self, parent, cfg: RvosPipelineConfig):
        super().__init__(parent)
        self.cfg = cfg

    def __next__(self) -> dict:
        good, skipped = [], []
        while len(good) < self.cfg.batch_size:
            try:
                s = next(self._parent)
            except StopIteration:
                if good and not self.cfg.drop_remainder:
                    break
                if skipped:
                    return {"batch": None, "skipped": skipped}
                raise
            (skipped if "__skip__" in s else good).append(s)
            if not good and len(skipped) >= SKIP_FLUSH:  # hand the skips up (counted, judged) before more reads
                return {"batch": None, "skipped": skipped}
        return {"batch": collate_rvos(good, self.cfg.patch_buckets), "skipped": skipped}

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


class RvosBatchIterator:
    """Batches of VIRST samples (module docstring); `stats` counts samples and skips per reason."""

    def __init__(self, cfg: RvosPipelineConfig):
        self.cfg = cfg
        ds = RvosDataset(cfg.root, cfg.format, cfg.split, strict=cfg.strict)
        if not ds.has_masks:
            raise AnnotationError("no_masks", f"split {ds.split!r} has no ground-truth masks to train on",
                                  ds.paths["meta"])
        if not ds.expressions:
            raise AnnotationError("no_usable_record", f"no usable expression (skipped {dict(ds.skipped)})",
                                  ds.paths["meta"])
        self.reader_skipped = dict(ds.skipped)
        self.num_records = len(ds.expressions)
        records = grain.MapDataset.range(len(ds.expressions))
        if cfg.shuffle:
            records = records.shuffle(seed=cfg.seed)
        records = records.repeat(cfg.num_epochs).random_map(BuildRvosSample(cfg), seed=cfg.seed)
        self._it = iter(_Batches(records.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)),
                                 cfg))
        self.skipped: Counter = Counter()
        self.samples = 0
        self.first_skips: dict[str, str] = {}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        while True:
            out = next(self._it)
            for s in out["skipped"]:
                if self.cfg.strict:
                    raise AnnotationError(s["__skip__"], s["message"])
                self.skipped[s["__skip__"]] += 1
                self.first_skips.setdefault(s["__skip__"], s["message"])
            # with num_epochs=None a split whose every sample is skipped would be read forever
            if not self.samples and sum(self.skipped.values()) >= self.num_records:
                raise AnnotationError("no_usable_record", f"all {sum(self.skipped.values())} samples read were "
                                      f"skipped: {dict(self.skipped)} (first: {next(iter(self.first_skips.values()))})",
                                      self.cfg.root)
            if out["batch"] is not None:
                self.samples += len(out["batch"]["key"])
                return out["batch"]

    @property
    def stats(self) -> dict:
        return {"samples": self.samples, "skipped": dict(sorted(self.skipped.items())),
                "reader_skipped": self.reader_skipped}

    def get_state(self) -> dict:
        return {"grain": self._it.get_state(), "skipped": dict(self.skipped), "samples": self.samples}

    def set_state(self, state: dict) -> None:
        self._it.set_state(state["grain"])
        self.skipped, self.samples = Counter(state["skipped"]), state["samples"]


def make_rvos_pipeline(cfg: RvosPipelineConfig) -> RvosBatchIterator:
    return RvosBatchIterator(cfg)


def virst_conversation(tokenizer, expression: str, grid, times, *, family: str, merge: int, temporal: int,
                       seg_count: int, seg_text: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """VIRST's teacher-forced conversation (`stvl_jax.models.virst.host.prompts`: question template with the
    Qwen-VL video where upstream puts <image>, answer template with `seg_count` [SEG] tokens) as ChatML token ids,
    the video pads expanded to the grid's token count. grid (3,): the video's (t, h, w) patches; times (frames,)
    seconds; rng: picks the templates (`random.Random`). -> (input_ids (L,) int32, assistant (L,) bool)."""
    from data_pipelines.grain.text import VIDEO_PAD, encode, render_chat, video_placeholder
    from stvl_jax.models.qwen_vl.host.placeholders import video_block_tokens
    from stvl_jax.models.virst.host.prompts import IGNORE, answer, question_parts

    before, after = question_parts(expression, modality="Video", rng=rng)
    user = before + video_placeholder(grid, family, np.asarray(times, np.float64), temporal) + after
    text, spans = render_chat([{"role": "user", "content": user},
                               {"role": "assistant", "content": answer(seg_count, seg_token=seg_text, rng=rng)}])
    pad = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    input_ids, labels = encode(tokenizer, text, spans, {pad: video_block_tokens(grid, merge, family)})
    return input_ids, labels != IGNORE
