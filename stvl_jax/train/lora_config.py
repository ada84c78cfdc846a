"""The `lora:` section of a train config (absent = no LoRA): adapters on the base model's linear layers, base
weights frozen (no gradients, no optimizer state) except the groups named in `train_groups`."""

from __future__ import annotations

from typing import Literal

import pydantic

from stvl_jax.config_base import StrictConfig
from stvl_jax.nn.lora import LoRASpec

LLM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRAConfig(StrictConfig):
    rank: int = pydantic.Field(default=8, gt=0)
    alpha: float = pydantic.Field(default=16.0, gt=0)  # scale = alpha / rank (PEFT's lora_alpha)
    dropout: float = pydantic.Field(default=0.0, ge=0, lt=1)  # on the adapter input, training forwards only
    targets: tuple[str, ...] = LLM_PROJECTIONS  # Linear attribute names (see stvl_jax.nn.lora.target_names)
    modules: Literal["llm", "vision", "all"] = "llm"  # decoder layers, ViT blocks, or both
    # base parameter groups trained fully beside the adapters (PEFT's modules_to_save), e.g. [embed] for added
    # tokens; every other base parameter is frozen, whatever optim.groups.*.train says
    train_groups: tuple[Literal["vision", "merger", "llm", "embed"], ...] = ()
    lr: float | None = pydantic.Field(default=None, ge=0)  # adapters' peak lr (None: optim.lr)
    weight_decay: float | None = pydantic.Field(default=None, ge=0)  # None: optim.weight_decay

    @pydantic.field_validator("targets")
    @classmethod
    def _some_targets(cls, v):
        if not v:
            raise ValueError("lora.targets is empty; name the linear layers to adapt, e.g. [q_proj, v_proj]")
        return v

    def spec(self) -> LoRASpec:
        return LoRASpec(self.rank, self.alpha, self.dropout, tuple(self.targets), self.modules)
