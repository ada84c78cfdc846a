"""`stvl train CONFIG` for a SAM2 config (`task: sam2`, e.g. `stvl train sam2_tiny_synthetic`)."""

from __future__ import annotations

from stvl_jax.errors import InputError
from stvl_jax.sharding import ShardingError


def run_sam2(config: str, overrides: list[str]) -> int:
    from stvl_jax import packaged
    from stvl_jax.train.sam2_config import load_sam2_train_config
    from stvl_jax.train.sam2_trainer import Sam2Trainer

    cfg = load_sam2_train_config(packaged.resolve_config(config, "train"), overrides)
    try:
        trainer = Sam2Trainer(cfg)
    except ShardingError as e:
        raise InputError(str(e)) from None
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    loss = summary["loss"]
    print(f"done: step {summary['step']}" + (f", loss {loss:.6g}" if loss is not None else "")
          + f", checkpoints in {summary['checkpoint_dir']}, SAM2 model in {summary['model_dir']}")
    return 0
