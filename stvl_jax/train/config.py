"""The typed training config (`stvl train CONFIG [key=value ...]`): nested sections, unknown keys refused.

    name: tiny-run                     out_dir: runs/tiny-run           steps: 100        seed: 0
    model:      which network, where its weights come from, compute dtype, remat
    data:       synthetic batches or the Grain pipeline (`data_pipelines.grain.PipelineConfig` fields)
    optim:      AdamW + warmup/cosine + clipping + accumulation, per-group lr / weight decay / freezing
    loss:       lm (masked next-token CE) | streamo_focal | a name registered in `stvl_jax.train.losses.LOSSES`
    mesh:       ('data', 'fsdp', 'tensor') sizes, -1 = the remaining devices
    checkpoint: Orbax CheckpointManager: every N steps, keep K, async
    logging:    console/progress bar, TensorBoard, loss-curve PNG, MFU peak override
    distributed: jax.distributed.initialize mode (auto | none | explicit | slurm | tpu)
    lora:       LoRA adapters (rank, alpha, dropout, targets, modules); absent = no LoRA

Every field is documented in docs/training.md; `configs/train/*.yaml` are working examples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from stvl_jax.config_base import StrictConfig, load_config
from stvl_jax.errors import ConfigError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.train.lora_config import LoRAConfig

GROUP_NAMES = ("vision", "merger", "llm", "embed")


class ModelSection(StrictConfig):
    """Exactly one source of the architecture: `config` (a preset name from configs/models, e.g.
    `qwen3vl_tiny`, or a YAML file of `QwenVLConfig` fields), `arch` (the same fields inline) or `checkpoint`
    (an stvl-jax checkpoint directory, whose stvl_config.json gives the architecture and params/ the initial
    weights, or a Hugging Face directory: config.json + safetensors, read in place)."""

    config: str | None = None
    arch: QwenVLConfig | None = None
    checkpoint: str | None = None
    vocab_size: int | None = pydantic.Field(default=None, gt=0)  # grow embed/lm_head rows (added tokens)
    dtype: Literal["float32", "bfloat16"] = "bfloat16"  # compute dtype; master weights are `param_dtype`
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    remat: Literal["none", "full", "dots", "dots_no_batch"] = "none"
    # one lax.scan over the stacked layers (compile time flat in depth; MaxText's default) or the loop unrolled
    # (faster on CPU, where the scan's per-layer slices and stacks cost ~10% of a small model's step)
    scan_layers: bool = True

    @pydantic.model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("config", "arch", "checkpoint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of model.config, model.arch, model.checkpoint (got {given or 'none'})")
        return self

    def resolve_arch(self) -> QwenVLConfig:
        """The architecture (before any `vocab_size` growth)."""
        if self.arch is not None:
            return self.arch
        if self.config is not None:
            from stvl_jax.models.qwen_vl.presets import load_model_config

            return load_model_config(self.config)
        from stvl_jax.models.qwen_vl.loading import read_config

        return read_config(self.checkpoint)[0]


class SyntheticDataConfig(StrictConfig):
    """In-process random batches for tests/benchmarks: a learnable copy task over `seq_len` text tokens with an
    optional image and/or video per row. Batch i is a pure function of (seed, i), so data order is exactly
    reproducible."""

    seq_len: int = pydantic.Field(default=32, gt=3)
    image_grid: tuple[int, int, int] | None = (1, 4, 4)  # (t, h, w) patches per row, None = no image
    video_grid: tuple[int, int, int] | None = None  # (t, h, w) patches per row (t temporal patches)
    vocab_limit: int | None = None  # text tokens drawn from the first N non-vision ids (default: all)
    state_token_ids: tuple[int, ...] = ()  # if set, every 4th label is one of these (focal-loss tests)


class DataConfig(StrictConfig):
    kind: Literal["synthetic", "grain"] = "synthetic"
    batch_size: int = pydantic.Field(default=8, gt=0)  # global batch per micro-step (all processes)
    synthetic: SyntheticDataConfig = SyntheticDataConfig()
    pipeline: dict[str, Any] = {}  # PipelineConfig fields (kind=grain); batch_size is set from above
    pad_batch_to_mesh: bool = False  # pad rows (zero loss) to a multiple of data x fsdp instead of failing
    pad_patches_to_multiple: int | None = None  # fewer distinct vision shapes -> fewer compiles
    vision_buckets: bool = False  # pad packed patches and attention segments to the model's bucket sizes
    # stop when more than this fraction of the records read were skipped as unusable (kind=grain; judged after
    # min(index size, 1000) records and at the end; 0 = none may be skipped, 1 = never stop)
    max_skip_fraction: float = pydantic.Field(default=0.1, ge=0, le=1)


class GroupConfig(StrictConfig):
    train: bool = True
    lr: float | None = pydantic.Field(default=None, ge=0)  # None: optim.lr
    weight_decay: float | None = pydantic.Field(default=None, ge=0)  # None: optim.weight_decay


class GroupsConfig(StrictConfig):
    """Parameter groups by path prefix (see `stvl_jax.train.param_groups`)."""

    vision: GroupConfig = GroupConfig()
    merger: GroupConfig = GroupConfig()
    llm: GroupConfig = GroupConfig()
    embed: GroupConfig = GroupConfig()

    def trainable(self) -> tuple[str, ...]:
        return tuple(g for g in GROUP_NAMES if getattr(self, g).train)


class OptimConfig(StrictConfig):
    lr: float = pydantic.Field(default=1e-4, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int | None = pydantic.Field(default=None, ge=0)  # None: warmup_ratio * steps
    warmup_ratio: float = pydantic.Field(default=0.0, ge=0, le=1)
    min_lr_ratio: float = pydantic.Field(default=0.0, ge=0, le=1)  # cosine/linear floor, fraction of peak
    weight_decay: float = pydantic.Field(default=0.0, ge=0)
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float | None = pydantic.Field(default=1.0, gt=0)  # None: no clipping
    grad_accum_steps: int = pydantic.Field(default=1, gt=0)
    groups: GroupsConfig = GroupsConfig()
    # a step with a NaN/inf loss or gradient norm never updates the state; stop: end the run with an error
    # (nothing saved after the last finite checkpoint); skip: drop that update, count it and go on
    non_finite: Literal["stop", "skip"] = "stop"

    @pydantic.model_validator(mode="after")
    def _some_trainable(self):
        if not self.groups.trainable():
            raise ValueError("optim.groups: every group is frozen; nothing to train")
        return self


class FocalConfig(StrictConfig):
    gamma: float = pydantic.Field(default=2.0, ge=0)
    state_token_ids: tuple[int, ...] = ()  # the three state tokens (</Silence>, </Standby>, </Response>)
    alpha_scope: Literal["batch", "sequence", "none"] = "batch"  # class counts per micro-batch / per row / no alpha


class StrideLossConfig(StrictConfig):
    label_token_ids: tuple[int, ...] = ()  # [<inactive>, <active>]: STRIDE's 2-way head (class 0, class 1)


class LossConfig(StrictConfig):
    kind: str = "lm"  # "lm" | "streamo_focal" | any name registered in stvl_jax.train.losses.LOSSES
    focal: FocalConfig = FocalConfig()
    stride: StrideLossConfig = StrideLossConfig()  # loss.kind=stride_activation


class MeshConfig(StrictConfig):
    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    def shape(self) -> dict[str, int]:
        return {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}


class CheckpointConfig(StrictConfig):
    dir: str | None = None  # default: {out_dir}/checkpoints
    every: int = pydantic.Field(default=100, gt=0)
    keep: int = pydantic.Field(default=3, gt=0)
    async_save: bool = True
    save_final: bool = True
    # never: refuse a directory that already holds checkpoints; auto: resume if there is one (preemptible
    # jobs); required: resume or fail (`stvl train ... --resume`)
    resume: Literal["never", "auto", "required"] = "never"
    # check every restored array against the checksums recorded at save (a damaged checkpoint is skipped on
    # resume); false skips the check (the checksums are still recorded: one on-device pass over the state)
    verify: bool = True


class LoggingConfig(StrictConfig):
    every: int = pydantic.Field(default=1, gt=0)
    progress: bool = True  # tqdm bar (console lines otherwise)
    tensorboard: bool = True
    plot: bool = True  # {out_dir}/loss_curve.png at the end
    peak_flops_per_device: float | None = None  # override the device-kind table (needed on CPU)


class DistributedConfig(StrictConfig):
    """`auto`: initialize when the environment says so (TPU pod, SLURM with >1 task, JAX_COORDINATOR_ADDRESS);
    `explicit`: use the fields below; `slurm`/`tpu`: force that detection; `none`: single process."""

    mode: Literal["auto", "none", "explicit", "slurm", "tpu"] = "auto"
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    cpu_collectives: Literal["gloo", "mpi", "none"] = "gloo"  # CPU multi-process only
    initialization_timeout_s: int = 300


class TrainConfig(StrictConfig):
    name: str = "run"
    out_dir: str = "runs/run"
    steps: int = pydantic.Field(default=100, gt=0)
    seed: int = 0
    model: ModelSection
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    mesh: MeshConfig = MeshConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    distributed: DistributedConfig = DistributedConfig()
    lora: LoRAConfig | None = None  # LoRA adapters (stvl_jax.train.lora_config); absent: full training

    @property
    def checkpoint_dir(self) -> str:
        return self.checkpoint.dir or str(Path(self.out_dir) / "checkpoints")

    @property
    def warmup_steps(self) -> int:
        o = self.optim
        return o.warmup_steps if o.warmup_steps is not None else int(round(o.warmup_ratio * self.steps))


def load_train_config(path: str | Path, overrides=()) -> TrainConfig:
    """Read a YAML train config (a file path, or the name of a packaged one: `streamo_tiny` =
    configs/train/streamo_tiny.yaml, see `stvl_jax.packaged`) with `a.b=c` overrides; raises `ConfigError` with
    one clear message."""
    from stvl_jax import packaged

    path = packaged.resolve_config(path, "train")
    cfg = load_config(TrainConfig, path, overrides)
    if cfg.data.kind == "grain" and not cfg.data.pipeline:
        raise ConfigError(f"{path}: data.kind=grain needs data.pipeline (index, tokenizer, ...)")
    return cfg
