"""LoRA in the trainer: which groups train, the adapters' optimizer settings, their initial values when the base
weights come from a checkpoint, FLOP multipliers and what a checkpoint records.

With `lora:` set, the trainable parameters are the adapters (group `lora`) plus `lora.train_groups`; every other
base parameter is frozen: no gradient, no optimizer state (`ModelSpec.split`).
"""

from __future__ import annotations

import jax
import numpy as np

from stvl_jax.nn.lora import is_adapter
from stvl_jax.sharding import auto_mesh
from stvl_jax.train.config import GroupConfig, TrainConfig
from stvl_jax.train.param_groups import LORA_GROUP
from stvl_jax.train.state import ModelSpec, init_params_fn


def trainable_groups(cfg: TrainConfig) -> tuple[str, ...]:
    if cfg.lora is None:
        return cfg.optim.groups.trainable()
    return (LORA_GROUP, *cfg.lora.train_groups)


def extra_groups(cfg: TrainConfig) -> dict[str, GroupConfig]:
    """Optimizer settings of the groups `cfg.optim.groups` does not train: the adapters, and `train_groups`."""
    if cfg.lora is None:
        return {}
    extra = {g: getattr(cfg.optim.groups, g).replace(train=True) for g in cfg.lora.train_groups}
    extra[LORA_GROUP] = GroupConfig(lr=cfg.lora.lr, weight_decay=cfg.lora.weight_decay)
    return extra


def base_spec(spec: ModelSpec) -> ModelSpec:
    """The same model without adapters (what a base checkpoint holds)."""
    return ModelSpec.create(spec.config, trainable_groups=tuple(g for g in spec.trainable_groups if g != LORA_GROUP),
                            **spec.build_options(), preprocessing=spec.preprocessing)


def refuse_adapter_checkpoint(path: str) -> None:
    """A LoRA-trained checkpoint as `model.checkpoint` (initial weights) is one error line: its adapters are not
    part of the base model. Merge them first (`stvl convert export`), or resume its run."""
    from stvl_jax.errors import CheckpointError
    from stvl_jax.models.qwen_vl.checkpoints import open_checkpoint

    with open_checkpoint(path) as source:
        lora = source.info.get("lora")
    if lora is not None:
        raise CheckpointError(f"model.checkpoint {str(path)!r} holds LoRA adapters (rank {lora.get('rank')}): "
                              f"export it merged (stvl convert export --ckpt ... --out DIR) and start from DIR, or "
                              f"resume its run with --resume")


def init_adapters(spec: ModelSpec, mesh, seed: int) -> dict[str, jax.Array]:
    """Fresh adapters, sharded by the rules table: the values a fresh run from `seed` gives them (the base
    initialisers' work is dead code in this program and is removed by XLA)."""
    init = init_params_fn(spec)
    shardings = {k: v for k, v in spec.param_shardings(mesh).items() if is_adapter(k)}
    with jax.set_mesh(auto_mesh(mesh)):
        return jax.jit(lambda: {k: v for k, v in init(jax.random.split(jax.random.PRNGKey(seed))[0]).items()
                                if is_adapter(k)}, out_shardings=shardings)()


def multipliers(base: dict[str, int], cfg: TrainConfig) -> dict[str, int]:
    """FLOP multipliers with adapters: a component holding adapters, and everything downstream of it, needs
    activation gradients (>= 2x forward); adapter weight gradients are negligible."""
    if cfg.lora is None:
        return base
    first = {"llm": "llm", "vision": "vision", "all": "vision"}[cfg.lora.modules]
    order = ("vision", "merger", "llm", "head")
    return {k: max(v, 2) if order.index(k) >= order.index(first) else v for k, v in base.items()}


def summary(spec: ModelSpec) -> str:
    """The line the trainer prints at start: adapter count, share of the model, what else trains."""
    sizes = {k: int(np.prod(v.get_value().shape)) for k, v in spec.abstract.items()}
    n_ad = sum(n for k, n in sizes.items() if is_adapter(k))
    other = [g for g in spec.trainable_groups if g != LORA_GROUP]
    return (f"LoRA: {n_ad:,} adapter parameters ({100 * n_ad / max(sum(sizes.values()), 1):.2f}% of the model), "
            f"rank {spec.lora.rank}, alpha {spec.lora.alpha:g}, targets {list(spec.lora.targets)} in "
            f"{spec.lora.modules}; base weights frozen" + (f" except groups {other}" if other else ""))


def sections(spec: ModelSpec) -> dict:
    """What a checkpoint records about its adapters (`stvl convert export` merges or writes them from it)."""
    return {} if spec.lora is None else {"lora": spec.lora.to_dict()}
