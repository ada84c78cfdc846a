"""`stvl train CONFIG` for the flat-parameter trainers: SAM2 (`task: sam2`, e.g. `stvl train sam2_tiny_synthetic`)
and VIRST (`task: virst`, e.g. `stvl train virst_tiny`)."""

from __future__ import annotations

from stvl_jax.errors import InputError
from stvl_jax.sharding import ShardingError


def _run(trainer_cls, cfg, what: str) -> int:
    try:
        trainer = trainer_cls(cfg)
    except ShardingError as e:
        raise InputError(str(e)) from None
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    loss = summary["loss"]
    print(f"done: step {summary['step']}" + (f", loss {loss:.6g}" if loss is not None else "")
          + f", checkpoints in {summary['checkpoint_dir']}, {what} model in {summary['model_dir']}")
    return 0


def run_sam2(config: str, overrides: list[str]) -> int:
    from stvl_jax import packaged
    from stvl_jax.train.sam2_config import load_sam2_train_config
    from stvl_jax.train.sam2_trainer import Sam2Trainer

    return _run(Sam2Trainer, load_sam2_train_config(packaged.resolve_config(config, "train"), overrides), "SAM2")


def run_virst(config: str, overrides: list[str]) -> int:
    from stvl_jax import packaged
    from stvl_jax.train.virst_config import load_virst_train_config
    from stvl_jax.train.virst_trainer import VirstTrainer

    return _run(VirstTrainer, load_virst_train_config(packaged.resolve_config(config, "train"), overrides), "VIRST")
