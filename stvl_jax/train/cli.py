"""`stvl train CONFIG [key=value ...] [--resume]` — see docs/training.md.

    stvl train configs/train/qwen3vl_tiny_synthetic.yaml steps=50 optim.lr=3e-4 out_dir=runs/try
    stvl train qwen3vl_tiny_synthetic out_dir=runs/try --resume   # the packaged config, from the last checkpoint

User errors (unknown config key, missing checkpoint, indivisible batch) surface as `UserError`s, which the `stvl`
dispatcher prints as one line (exit status 2).
"""

from __future__ import annotations

import argparse

from stvl_jax.errors import InputError
from stvl_jax.sharding import ShardingError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stvl train", description="Train a Qwen-VL model from a typed YAML config.")
    p.add_argument("config", help="a train config YAML path, or the name of a packaged one (configs/train: "
                   "qwen3vl_tiny_synthetic, streamo_tiny, stride_tiny, ...)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. optim.lr=1e-4")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in checkpoint.dir (fails if there is none)")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from stvl_jax.train.config import load_train_config

    overrides = list(args.overrides) + (["checkpoint.resume=required"] if args.resume else [])
    from stvl_jax import packaged
    from stvl_jax.train.sam2_config import config_task

    task = config_task(packaged.resolve_config(args.config, "train"))
    if task in ("sam2", "virst"):  # SAM2 video segmentation / VIRST referring segmentation
        from stvl_jax.train import sam2_cli

        return getattr(sam2_cli, f"run_{task}")(args.config, overrides)
    cfg = load_train_config(args.config, overrides)
    from stvl_jax.train.trainer import Trainer

    try:
        trainer = Trainer(cfg)
        summary = trainer.run()
    except ShardingError as e:  # a batch/mesh mismatch is the user's config, not a bug
        raise InputError(str(e)) from None
    if trainer.is_main:
        loss = summary["loss"]
        print(f"done: step {summary['step']}, loss {loss:.6g}, checkpoints in {summary['checkpoint_dir']}"
              if loss is not None else f"done: step {summary['step']}")
        if summary.get("non_finite_skipped"):
            print(f"{summary['non_finite_skipped']} step(s) with a non-finite loss or gradient norm were skipped")
    return 0
