"""The typed config of SAM2 training (`stvl train sam2_tiny_synthetic`): a YAML with `task: sam2`.

    task: sam2          name, out_dir, steps, seed
    model:      config (a configs/models preset, e.g. sam2_tiny, or a YAML of Sam2VideoConfig fields) or
                checkpoint (a SAM2 checkpoint: stvl-jax or HF directory, its weights the starting point)
    data:       the synthetic set (`stvl data synth --preset vos --out DIR`), split, clip shape, prompts
    optim:      AdamW, warmup + cosine/linear/constant, clipping; groups image_encoder / decoder / memory
    loss:       `Sam2LossConfig` (SAM 2.1's weights)
    mesh:       ('data', 'fsdp', 'tensor') sizes; the batch is split over all of them (data parallel)
    checkpoint: Orbax: every N steps, keep K, resume never | auto | required
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

from stvl_jax.config_base import StrictConfig, load_config
from stvl_jax.errors import ConfigError
from stvl_jax.train.config import CheckpointConfig, MeshConfig
from stvl_jax.train.sam2_loss import Sam2LossConfig

SAM2_GROUPS = ("image_encoder", "decoder", "memory")


class Sam2ModelSection(StrictConfig):
    config: str | None = None
    checkpoint: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_source(self):
        if (self.config is None) == (self.checkpoint is None):
            raise ValueError("set exactly one of model.config, model.checkpoint")
        return self


class Sam2PromptSection(StrictConfig):
    """`data_pipelines.vos.PromptConfig` fields (SAM2's prompt simulation)."""
    prob_points: float = pydantic.Field(default=0.5, ge=0, le=1)  # clicks/boxes, else mask prompts
    prob_box: float = pydantic.Field(default=0.5, ge=0, le=1)  # a box, else a click
    max_cond_frames: int = pydantic.Field(default=2, ge=1)
    random_cond_frames: bool = True


class Sam2DataSection(StrictConfig):
    dir: str  # made by `stvl data synth --preset vos --out DIR`
    split: str = "train"
    batch_size: int = pydantic.Field(default=2, gt=0)  # clips per step (all devices)
    frames: int = pydantic.Field(default=8, gt=0)
    frame_stride: int = pydantic.Field(default=2, gt=0)
    max_objects: int = pydantic.Field(default=3, gt=0)  # object slots per clip (a random subset, SAM2: 3)
    prompts: Sam2PromptSection = Sam2PromptSection()
    # also decode every visible (object, frame) from a box without memory: SAM2's image batches (`image_term`)
    image_frames: bool = False
    # the clip pass with memory (SAM2's video batches); false with image_frames: image-only training, a cheap
    # step (encoder + decoder only) for the prompt path, before the memory is trained
    video_frames: bool = True

    @pydantic.model_validator(mode="after")
    def _some_term(self):
        if not (self.image_frames or self.video_frames):
            raise ValueError("data.image_frames and data.video_frames are both false: no loss to train")
        return self


class Sam2GroupConfig(StrictConfig):
    train: bool = True
    lr: float | None = pydantic.Field(default=None, ge=0)


class Sam2GroupsConfig(StrictConfig):
    image_encoder: Sam2GroupConfig = Sam2GroupConfig()
    decoder: Sam2GroupConfig = Sam2GroupConfig()  # prompt encoder + mask decoder
    memory: Sam2GroupConfig = Sam2GroupConfig()  # memory encoder, memory attention, pointers, temporal embeddings

    def trainable(self) -> tuple[str, ...]:
        return tuple(g for g in SAM2_GROUPS if getattr(self, g).train)


class Sam2OptimConfig(StrictConfig):
    lr: float = pydantic.Field(default=1e-3, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = pydantic.Field(default=0, ge=0)
    min_lr_ratio: float = pydantic.Field(default=0.1, ge=0, le=1)
    weight_decay: float = pydantic.Field(default=0.01, ge=0)
    max_grad_norm: float | None = pydantic.Field(default=1.0, gt=0)
    groups: Sam2GroupsConfig = Sam2GroupsConfig()

    @pydantic.model_validator(mode="after")
    def _some_trainable(self):
        if not self.groups.trainable():
            raise ValueError("optim.groups: every group is frozen; nothing to train")
        return self


class FlatRunConfig(StrictConfig):
    """The run fields of the flat trainers' configs (`flat_trainer.FlatTrainer`: SAM2, VIRST)."""

    name: str
    out_dir: str
    steps: int = pydantic.Field(default=100, gt=0)
    seed: int = 0
    mesh: MeshConfig = MeshConfig(data=-1, fsdp=1)
    checkpoint: CheckpointConfig = CheckpointConfig(every=50, async_save=False)
    log_every: int = pydantic.Field(default=1, gt=0)
    # stop after this much wall time (a checkpoint and the model are written there); None: run all steps
    time_limit_min: float | None = pydantic.Field(default=None, gt=0)

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or str(Path(self.out_dir) / "checkpoints")


class Sam2TrainConfig(FlatRunConfig):
    task: Literal["sam2"] = "sam2"
    name: str = "sam2"
    out_dir: str = "runs/sam2"
    cond_capacity: int = pydantic.Field(default=2, gt=0)  # conditioning frames per object (>= max_cond_frames)
    model: Sam2ModelSection
    data: Sam2DataSection
    optim: Sam2OptimConfig = Sam2OptimConfig()
    loss: Sam2LossConfig = Sam2LossConfig()

    @pydantic.model_validator(mode="after")
    def _capacity(self):
        if self.cond_capacity < self.data.prompts.max_cond_frames:
            raise ValueError(f"cond_capacity {self.cond_capacity} < data.prompts.max_cond_frames "
                             f"{self.data.prompts.max_cond_frames}")
        return self


def config_task(path: str | Path) -> str | None:
    """The top-level `task:` of a train YAML (sam2, virst; None for the Qwen-VL trainer's configs)."""
    from stvl_jax.config_base import load_yaml

    data = load_yaml(path)
    return data.get("task") if isinstance(data, dict) else None


def is_sam2_config(path: str | Path) -> bool:
    """Whether a train YAML is a SAM2 one (top-level `task: sam2`)."""
    return config_task(path) == "sam2"


def load_sam2_train_config(path: str | Path, overrides=()) -> Sam2TrainConfig:
    return load_config(Sam2TrainConfig, path, overrides)


def resolve_model_config(section: Sam2ModelSection):
    """The Sam2VideoConfig of `model.config` (a preset name in configs/models or a YAML path)."""
    from stvl_jax import packaged
    from stvl_jax.models.sam2.video_config import Sam2VideoConfig

    path = packaged.resolve_config(section.config, "models")
    try:
        return load_config(Sam2VideoConfig, path)
    except ConfigError as e:
        raise ConfigError(f"model.config {section.config!r}: {e}") from None
