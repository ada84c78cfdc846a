"""The typed config of VIRST training (`stvl train virst_tiny`): a YAML with `task: virst`.

    task: virst         name, out_dir, steps, seed
    model:      config (a configs/models VIRST preset, e.g. virst_tiny, or a YAML of VirstConfig fields),
                sam2_checkpoint (optional: a SAM2 video checkpoint whose weights replace the fresh SAM2, as VIRST
                starts from SAM2.1), tokenizer (an HF tokenizer directory; None: the project's tiny tokenizer),
                checkpoint (optional: a VIRST checkpoint to start from instead of a fresh model)
    data:       a referring-segmentation set (`stvl data synth --export rvos`, or MeViS / Ref-YouTube-VOS / ReVOS
                layouts), frames per sample (VLM / SAM2), fixed VLM size, prompt length, skip tolerance, the
                training anchors (VIRST's random ones, or the evaluation rule)
    optim:      AdamW, warmup + cosine/linear/constant, clipping; groups llm / image_encoder / decoder / prompter
    loss:       `virst_loss.VirstLossConfig` (VIRST's weights)
    mesh:       ('data', 'fsdp', 'tensor') sizes; the batch is split over all of them (data parallel)
    checkpoint: Orbax: every N steps, keep K, resume never | auto | required
    lora:       optional, the Qwen-VL trainer's `lora:` section (`lora_config.LoRAConfig`) applied to the LLM, as
                VIRST trains it: adapters (group `lora`) train, the LLM's base weights are frozen whatever
                optim.groups.llm says, except the Qwen-VL groups of `lora.train_groups` (e.g. [embed] for the [SEG]
                row; optim.groups.llm.lr); image_encoder / decoder / prompter train as optim.groups says
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

from stvl_jax.config_base import StrictConfig, load_config
from stvl_jax.errors import ConfigError
from stvl_jax.train.sam2_config import FlatRunConfig, Sam2GroupConfig, Sam2OptimConfig
from stvl_jax.train.lora_config import LoRAConfig
from stvl_jax.train.virst_loss import VirstLossConfig

VIRST_GROUPS = ("llm", "image_encoder", "decoder", "prompter")


class VirstModelSection(StrictConfig):
    config: str = "virst_tiny"
    sam2_checkpoint: str | None = None
    tokenizer: str | None = None
    checkpoint: str | None = None


class VirstDataSection(StrictConfig):
    dir: str  # made by `stvl data synth --out DIR --export rvos` (format synthetic)
    format: Literal["synthetic", "mevis", "refytvos", "revos"] = "synthetic"
    split: str = "train"
    batch_size: int = pydantic.Field(default=2, gt=0)  # expressions per step (all devices)
    vlm_frames: int = pydantic.Field(default=4, gt=0)  # frames the VLM sees
    seg_frames: int = pydantic.Field(default=4, gt=0)  # of those, frames SAM2 segments (supervised)
    vlm_size: tuple[int, int] = (64, 64)  # every video resized to (h, w) for the VLM: one static row count
    fps: float = pydantic.Field(default=1.0, gt=0)  # frame index / fps = the Qwen3-VL timestamp of a frame
    max_len: int = pydantic.Field(default=256, gt=0)  # prompt tokens (padded); longer prompts are skipped
    max_skip_fraction: float = pydantic.Field(default=0.1, ge=0, le=1)
    # the training forward's anchors (virst_step.batch_loss): "random" = VIRST's training rule (min(num_anchors,
    # seg_frames) distinct frames per expression, drawn from (seed, step)), the other frames tracked through SAM2's
    # memory inside the forward; "uniform" = the evaluation rule `tdau.anchor_frames_for(T)`, the rest tracked;
    # "all" = every SAM2 frame gets its own decoded prompts, as VIRST's default training (`use_cond_frames` False:
    # its keyframes are all conditioning frames; no memory attention in the step, which is then cheaper)
    anchors: Literal["random", "uniform", "all"] = "random"
    num_anchors: int = pydantic.Field(default=3, gt=0)  # random: VIRST `select_keyframes` takes min(3, T)

    @pydantic.model_validator(mode="after")
    def _frames(self):
        if self.seg_frames > self.vlm_frames:
            raise ValueError(f"data.seg_frames {self.seg_frames} > data.vlm_frames {self.vlm_frames}")
        return self


class VirstGroupsConfig(StrictConfig):
    llm: Sam2GroupConfig = Sam2GroupConfig()  # the Qwen-VL (vision tower, LM, [SEG] rows)
    image_encoder: Sam2GroupConfig = Sam2GroupConfig()  # SAM2 Hiera + FPN
    decoder: Sam2GroupConfig = Sam2GroupConfig()  # SAM2 prompt encoder, mask decoder, memory modules
    prompter: Sam2GroupConfig = Sam2GroupConfig()  # SegPrompter (+ initial fusion)

    def trainable(self) -> tuple[str, ...]:
        return tuple(g for g in VIRST_GROUPS if getattr(self, g).train)


class VirstOptimConfig(Sam2OptimConfig):
    """AdamW as SAM2's trainer (`Sam2OptimConfig`), VIRST's groups and defaults (lr 3e-4, no weight decay)."""

    lr: float = pydantic.Field(default=3e-4, ge=0)  # VIRST: 3e-4 (utils/argument.py)
    weight_decay: float = pydantic.Field(default=0.0, ge=0)
    groups: VirstGroupsConfig = VirstGroupsConfig()


class VirstTrainConfig(FlatRunConfig):
    task: Literal["virst"] = "virst"
    name: str = "virst"
    out_dir: str = "runs/virst"
    model: VirstModelSection = VirstModelSection()
    data: VirstDataSection
    optim: VirstOptimConfig = VirstOptimConfig()
    loss: VirstLossConfig = VirstLossConfig()
    lora: LoRAConfig | None = None  # adapters on the LLM (`lora_config.LoRAConfig`); absent: no LoRA


def load_virst_train_config(path: str | Path, overrides=()) -> VirstTrainConfig:
    return load_config(VirstTrainConfig, path, overrides)


def resolve_virst_model(section: VirstModelSection):
    """The VirstConfig of `model.config` (a preset name in configs/models or a YAML path)."""
    from stvl_jax.models.virst.config import load_virst_config

    try:
        return load_virst_config(section.config)
    except ConfigError as e:
        raise ConfigError(f"model.config {section.config!r}: {e}") from None
