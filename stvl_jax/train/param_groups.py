"""Parameter groups by path prefix, and the trainable / frozen split.

Groups (first matching rule wins; paths are the model's `/`-joined parameter paths):

    merger  visual/merger/...  visual/deepstack_merger_<i>/...     (vision -> LLM projection, DeepStack taps)
    vision  visual/...                                              (patch embed, position table, ViT blocks)
    embed   language_model/embed_tokens/...  lm_head/...            (input table and output head; one table
                                                                     when tied)
    llm     language_model/...                                      (decoder layers, final norm)
    lora    .../lora/a  .../lora/b                                  (LoRA adapters, `stvl_jax.nn.lora`; first)

Seeds train different subsets: Streamo freezes `vision` (trains merger + llm + embed); STRIDE trains `embed` and
`llm` with separate learning rates (vision and merger frozen).

Weight decay is never applied to biases, norm scales or the vision position table (`no_decay`), matching HF
Trainer's exclusion of biases and LayerNorm weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from stvl_jax.train.config import GROUP_NAMES

LORA_GROUP = "lora"
_RULES: tuple[tuple[str, re.Pattern], ...] = (
    (LORA_GROUP, re.compile(r"^.*/lora/[ab]$")),
    ("merger", re.compile(r"^visual/(merger|deepstack_merger_\d+)/")),
    ("vision", re.compile(r"^visual/")),
    ("embed", re.compile(r"^(language_model/embed_tokens|lm_head)/")),
    ("llm", re.compile(r"^language_model/")),
)


def group_of(path: str) -> str:
    """The group of one parameter path, e.g. 'visual/blocks/attn/q_proj/kernel' -> 'vision'."""
    for name, rule in _RULES:
        if rule.match(path):
            return name
    raise ValueError(f"parameter {path!r} belongs to no group {GROUP_NAMES}; extend stvl_jax.train.param_groups")


def split_by_groups(flat: Mapping[str, Any], trainable_groups: Iterable[str]) -> tuple[dict, dict]:
    """flat {path: x} -> (trainable {path: x}, frozen {path: x}) by group membership."""
    keep = set(trainable_groups)
    unknown = keep - set(GROUP_NAMES) - {LORA_GROUP}
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}; known {(*GROUP_NAMES, LORA_GROUP)}")
    trainable = {p: x for p, x in flat.items() if group_of(p) in keep}
    frozen = {p: x for p, x in flat.items() if group_of(p) not in keep}
    return trainable, frozen


def decays(path: str) -> bool:
    """False for biases, norm scales and the learned vision position table."""
    parts = path.split("/")
    return not (parts[-1] == "bias" or any("norm" in p for p in parts[:-1]) or parts[-1] == "pos_embed")
