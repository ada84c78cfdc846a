"""VIRST training batches: the Grain referring-segmentation pipeline (`data_pipelines.grain.rvos`) plus VIRST's
teacher-forced prompt per sample (`VirstPrompt`, its `sample_fn`).

Per sample (one expression of one video), `VirstPrompt` writes VIRST's conversation (`models.virst.host.prompts`:
a question template with the Qwen-VL video in place of upstream's <image>, an answer template with Q [SEG]
tokens), renders it as ChatML, tokenizes it (`data_pipelines.grain.text.encode`, the video pads expanded to the
grid's token count), labels the assistant turn with the [SEG] positions masked (`prompts.mask_labels`), computes
the M-RoPE position ids, and right-pads to `max_len`:

    input_ids (L,) int32   attention_mask (L,) int32   labels (L,) int32 (-100 off loss)   position_ids (3, L)

A prompt longer than `max_len` is a counted skip (`too_long`), as an unreadable video is.

`RvosSource` wraps the pipeline for the trainer: `next_batch()` -> the device batch (text fields dropped, VLM rows
(B, N, D) per video), `state()` / `set_state()` for exact resume, `skips()` a `skips.SkipStats`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from data_pipelines.grain.rvos import RvosPipelineConfig, make_rvos_pipeline, virst_conversation
from data_pipelines.grain.text import SpecialIds, token_types
from stvl_jax.models.qwen_vl.host.positions import example_positions
from stvl_jax.models.virst.host.prompts import IGNORE, SEG_TOKEN, mask_labels
from stvl_jax.train.skips import SkipStats

DEVICE_KEYS = ("input_ids", "attention_mask", "labels", "position_ids", "pixel_values_videos",
               "sam2_pixel_values", "masks")


@dataclass(frozen=True)
class VirstPrompt:
    """Picklable `sample_fn` of the rvos pipeline (module docstring). family / merge / temporal: the Qwen-VL
    preprocessing's; seg_count: [SEG] tokens per expression; fps: frame index / fps = a frame's timestamp."""

    tokenizer_dir: str
    seg_token_id: int
    seg_count: int
    max_len: int
    family: str
    merge: int
    temporal: int
    fps: float = 1.0

    def tokenizer(self):
        tok = _TOKENIZERS.get(self.tokenizer_dir)
        if tok is None:
            from transformers import AutoTokenizer

            tok = _TOKENIZERS[self.tokenizer_dir] = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        return tok

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        tok = self.tokenizer()
        ids = SpecialIds.from_tokenizer(tok)
        text_rng = random.Random(int(rng.integers(2**31)))  # the templates, drawn as upstream (random.choice)
        grid = np.asarray(sample["video_grid_thw"]).reshape(-1, 3)
        input_ids, assistant = virst_conversation(
            tok, str(sample["expression"]), grid[0], np.asarray(sample["frame_indices"]) / self.fps,
            family=self.family, merge=self.merge, temporal=self.temporal, seg_count=self.seg_count,
            seg_text=SEG_TOKEN, rng=text_rng)
        n = len(input_ids)
        if n > self.max_len:
            return {"__skip__": "too_long", "message": f"{sample['key']}: {n} prompt tokens > data.max_len "
                    f"{self.max_len}", "source": str(sample["key"])}
        found = int((input_ids == self.seg_token_id).sum())
        if found != self.seg_count:
            return {"__skip__": "bad_field", "message": f"{sample['key']}: {found} [SEG] tokens in the prompt, "
                    f"expected {self.seg_count} (is the expression's text holding '[SEG]'?)",
                    "source": str(sample["key"])}
        labels = mask_labels(input_ids, assistant, self.seg_token_id)
        pos = example_positions(token_types(input_ids, ids), np.zeros((0, 3), np.int64), grid, family=self.family,
                                merge=self.merge)
        pad = self.max_len - n
        return {"input_ids": np.pad(input_ids, (0, pad), constant_values=ids.pad).astype(np.int32),
                "attention_mask": np.pad(np.ones(n, np.int32), (0, pad)),
                "labels": np.pad(labels, (0, pad), constant_values=IGNORE).astype(np.int32),
                "position_ids": np.pad(pos, ((0, 0), (0, pad))).astype(np.int32)}


_TOKENIZERS: dict = {}


class RvosSource:
    """The trainer's view of the rvos pipeline (module docstring)."""

    def __init__(self, cfg: RvosPipelineConfig):
        from data_pipelines.formats.rvos import RvosDataset, layout

        self.cfg = cfg
        self.it = make_rvos_pipeline(cfg)
        self.index = layout(cfg.root, cfg.format, cfg.split or "train")["meta"]
        self.records = len(RvosDataset(cfg.root, cfg.format, cfg.split).expressions) + \
            sum(self.it.reader_skipped.values())

    def next_batch(self) -> dict:
        b = next(self.it)
        out = {k: b[k] for k in DEVICE_KEYS}
        rows = out["pixel_values_videos"]
        out["pixel_values_videos"] = rows.reshape(len(b["key"]), -1, rows.shape[-1])  # equal grids: vlm_size
        return out

    def state(self) -> dict:
        return self.it.get_state()

    def set_state(self, state: dict) -> None:
        self.it.set_state(state)

    def skips(self) -> SkipStats:
        """Samples the pipeline skipped (per reason) and expressions the reader refused (`reader/<reason>`)."""
        st = self.it.stats
        skipped = dict(st["skipped"])
        for r, n in st["reader_skipped"].items():
            skipped[f"reader/{r}"] = int(n)
        return SkipStats(index=self.index, records=self.records, examples=st["samples"],
                         skipped=dict(sorted(skipped.items())), first=dict(self.it.first_skips))
