"""Training: typed config, trainer, losses, Orbax checkpoints, metrics/MFU, multi-host init. See docs/training.md.

    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.trainer import Trainer
    Trainer(load_train_config("configs/train/qwen3vl_tiny_synthetic.yaml", ["steps=20"])).run()
"""
