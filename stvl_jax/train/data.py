"""Batch sources for training: this process's share of each global batch, as a dict of numpy arrays (the HF
keys + `labels`, `loss_weights`, ...), with `get_state()` / `set_state()` that resume to exactly the next batch.

- `SyntheticSource`: deterministic random batches (batch i = f(seed, i, process)) — a copy task the tiny
  models learn, optionally with an image per row and state-token labels; for tests and benchmarks.
- `GrainSource`: `data_pipelines.grain.make_pipeline` (sharded by `jax.process_index()` by the pipeline).
"""

from __future__ import annotations

import numpy as np

from stvl_jax.errors import ConfigError, InputError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
from stvl_jax.train.config import DataConfig
from stvl_jax.train.skips import gather, no_usable_record


def local_batch_size(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ConfigError(f"data.batch_size={global_batch} is not divisible by the {process_count} processes")
    return global_batch // process_count


class SyntheticSource:
    """Rows: [vision blocks] prompt(n) prompt(n) [pad]: the second copy carries the
    labels, so a model that learns to copy drives the loss down. Global row g is shortened by g % 3 tokens
    (right padding) to exercise masks. The state ({"index": i}) is the same on every process."""

    def __init__(self, cfg: DataConfig, model: QwenVLConfig, *, seed: int, process_index: int = 0,
                 process_count: int = 1):
        self.cfg, self.model, self.seed = cfg, model, seed
        self.process_index = process_index
        self.local_batch = local_batch_size(cfg.batch_size, process_count)
        vision_ids = [model.image_token_id, model.video_token_id, model.vision_start_token_id,
                      model.vision_end_token_id]
        self.text_ids = np.setdiff1d(np.arange(model.text.vocab_size), vision_ids)[: cfg.synthetic.vocab_limit]
        self.index = 0

    def __iter__(self):
        return self

    def get_state(self) -> dict:
        return {"index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["index"])

    def __next__(self) -> dict:
        batch = self.make(self.index)
        self.index += 1
        return batch

    def _vision_head(self) -> list[int]:
        """Placeholder tokens of the row's image (one block) and video (Qwen3-VL: one block per temporal
        patch; Qwen2.5-VL: one block)."""
        sc, mc = self.cfg.synthetic, self.model
        unit = mc.vision.merge_unit
        head = []
        if sc.image_grid is not None:
            t, h, w = sc.image_grid
            head += [mc.vision_start_token_id] + [mc.image_token_id] * (t * h * w // unit) + [mc.vision_end_token_id]
        if sc.video_grid is not None:
            t, h, w = sc.video_grid
            blocks = [h * w // unit] * t if mc.family == "qwen3_vl" else [t * h * w // unit]
            for n in blocks:
                head += [mc.vision_start_token_id] + [mc.video_token_id] * n + [mc.vision_end_token_id]
        return head

    def make(self, index: int) -> dict:
        """This process's rows of global batch `index`. Row g of the global batch depends only on
        (seed, index, g), so the global batch is the same for any number of processes."""
        sc, mc = self.cfg.synthetic, self.model
        B, L = self.local_batch, sc.seq_len
        ids = np.zeros((B, L), np.int32)
        labels = np.full((B, L), -100, np.int32)
        mask = np.zeros((B, L), np.int32)
        head = self._vision_head()
        n = (L - len(head)) // 2
        if n < 1:
            raise ConfigError(f"data.synthetic.seq_len={L} leaves no room for text after {len(head)} vision tokens")
        grids = {"pixel_values": sc.image_grid, "pixel_values_videos": sc.video_grid}
        pixels = {k: [] for k, g in grids.items() if g is not None}
        for r in range(B):
            g = self.process_index * B + r  # global row
            rng = np.random.default_rng([self.seed, index, g])
            prompt = rng.choice(self.text_ids, n)
            if sc.state_token_ids:
                prompt[::4] = rng.choice(np.asarray(sc.state_token_ids), len(prompt[::4]))
            row = np.concatenate([head, prompt, prompt]).astype(np.int32)[: L - g % 3]
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
            start = len(head) + n
            labels[r, start: len(row)] = row[start:]
            for key in pixels:
                rows = int(np.prod(grids[key]))
                pixels[key].append(rng.standard_normal((rows, mc.vision.patch_dim)).astype(np.float32))
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
                 "loss_weights": (labels != -100).astype(np.float32)}
        for key, grid_key in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
            if key in pixels:
                batch[key] = np.concatenate(pixels[key])
                batch[grid_key] = np.tile(np.asarray([grids[key]], np.int64), (B, 1))
        return batch

    @property
    def stats(self) -> dict:
        return {"batches": self.index}


def training_preprocessing(cfg: DataConfig, model: QwenVLConfig, base: PreprocessConfig) -> PreprocessConfig:
    """What the model is trained at: `base` (the initial checkpoint's, or the family default) with the keys of
    `data.pipeline.preprocess` merged in; checked against the network (family, patch sizes)."""
    overrides = cfg.pipeline.get("preprocess") if cfg.kind == "grain" else None
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"data.pipeline.preprocess must be a mapping, got {overrides!r}")
    return model.check_preprocessing(base.updated(overrides, source="data.pipeline.preprocess"),
                                     "data.pipeline.preprocess")


def pipeline_config(cfg: DataConfig, model: QwenVLConfig, preprocessing: PreprocessConfig, *, seed: int,
                    process_count: int = 1):
    """The `PipelineConfig` of `data.pipeline` for this model: its preprocessing and position settings are the
    model's (a `positions` key that disagrees with the model is refused)."""
    from data_pipelines.grain import PipelineConfig

    fields = dict(cfg.pipeline)
    if "batch_size" in fields:
        raise ConfigError("set data.batch_size (the global batch), not data.pipeline.batch_size")
    given = fields.get("positions")
    if given is not None and {**model.positions.to_dict(), **given} != model.positions.to_dict():
        raise ConfigError(f"data.pipeline.positions {given} differs from the model's {model.positions.to_dict()} "
                          f"(drop it: the pipeline takes the model's)")
    fields.update(batch_size=local_batch_size(cfg.batch_size, process_count), preprocess=preprocessing.to_dict(),
                  positions=model.positions.to_dict())
    fields.setdefault("seed", seed)
    return PipelineConfig.from_dict(fields)


def check_vocabulary(tokenizer_dir: str, model: QwenVLConfig) -> None:
    """Refuse a tokenizer with more ids than the model has embedding rows: its added tokens (Streamo's states,
    Strefer's `<k>`) would index past the table, which a JAX gather clamps without a word."""
    from data_pipelines.tokenizer import open_tokenizer

    n = len(open_tokenizer(tokenizer_dir, "data.pipeline.tokenizer"))
    if n > model.text.vocab_size:
        raise ConfigError(f"data.pipeline.tokenizer {tokenizer_dir!r} has {n} tokens but the model has "
                          f"{model.text.vocab_size} embedding rows: set model.vocab_size={n} (or more; the new rows "
                          f"start at the mean of the others) and train the embed group")


class GrainSource:
    """The Grain pipeline; `data.pipeline` holds `PipelineConfig` fields (batch_size comes from data)."""

    def __init__(self, cfg: DataConfig, model: QwenVLConfig, preprocessing: PreprocessConfig, *, seed: int,
                 process_count: int = 1):
        from data_pipelines.grain import make_pipeline

        self.config = pipeline_config(cfg, model, preprocessing, seed=seed, process_count=process_count)
        check_vocabulary(self.config.tokenizer, model)
        self.it = make_pipeline(self.config)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        try:
            return next(self.it)
        except InputError as e:  # a whole pass of skips before the first batch (repeating forever)
            if getattr(e, "reason", None) != "no_usable_record":
                raise
            raise no_usable_record(gather(self, collective=False)) from None  # this process's shard only

    def get_state(self) -> dict:
        return self.it.get_state()

    def set_state(self, state: dict) -> None:
        self.it.set_state(state)

    @property
    def stats(self) -> dict:
        return self.it.stats

    @property
    def records(self) -> int:
        """Records in this process's shard of the index."""
        return self.it.records

    @property
    def first_skips(self) -> dict[str, str]:
        """reason -> the first record skipped for it."""
        return self.it.first_skips


def make_source(cfg: DataConfig, model: QwenVLConfig, *, seed: int, process_index: int, process_count: int,
                preprocessing: PreprocessConfig | None = None):
    if cfg.kind == "synthetic":
        return SyntheticSource(cfg, model, seed=seed, process_index=process_index, process_count=process_count)
    return GrainSource(cfg, model, preprocessing or model.default_preprocessing(), seed=seed,
                       process_count=process_count)


def checkpoint_sections(source) -> dict:
    """Task settings a checkpoint records for its evaluation: STRIDE's window geometry and clip frame rate
    (`stvl_jax.models.stride.config.recorded_settings` reads them)."""
    pc = getattr(source, "config", None)
    if pc is None or pc.format != "stride":
        return {}
    w = pc.stride
    return {"stride": {"window": w.window, "resolution": w.resolution, "single_sequence": w.single_sequence,
                       "fps": pc.stride_fps}}
