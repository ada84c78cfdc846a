"""STRIDE settings: the activation window and its three added tokens, as in STRIDE's reference implementation.

A STRIDE model is a Qwen3-VL whose vocabulary holds three extra tokens: `<activation>` (the mask),
`<active>` (label 1) and `<inactive>` (label 0). The window has `window` past slots of `resolution` seconds
(+ `future` slots, 0 in the released training code) written twice after the video (labels on the 2nd copy).
"""

from __future__ import annotations

from pathlib import Path

import pydantic

from stvl_jax.config_base import StrictConfig
from stvl_jax.errors import CheckpointError, ConfigError

ARCHITECTURE = "Qwen3VLForProactiveMDM"  # the hub's `architectures` string of STRIDE checkpoints
ACTIVATION, ACTIVE, INACTIVE = "<activation>", "<active>", "<inactive>"
TOKENS = (ACTIVATION, ACTIVE, INACTIVE)
# keys of a STRIDE hub config.json (the reference's model config) -> our field names
HF_KEYS = {"trigger_window_past": "window", "trigger_window_future": "future",
           "trigger_temporal_resolution": "resolution", "single_sequence": "single_sequence"}


class StrideConfig(StrictConfig):
    """Window geometry + token ids. `label_token_ids` orders the 2-way head as (class 0, class 1)."""

    window: int = pydantic.Field(default=256, gt=0)  # trigger_window_past (the reference's training script: 256)
    future: int = pydantic.Field(default=0, ge=0)  # trigger_window_future
    resolution: float = pydantic.Field(default=1.0, gt=0)  # seconds per slot
    single_sequence: bool = False  # True: the slot string is written once
    activation_token_id: int = pydantic.Field(ge=0)
    active_token_id: int = pydantic.Field(ge=0)
    inactive_token_id: int = pydantic.Field(ge=0)

    @pydantic.model_validator(mode="after")
    def _distinct(self):
        ids = (self.activation_token_id, self.active_token_id, self.inactive_token_id)
        if len(set(ids)) != 3:
            raise ValueError(f"the three STRIDE token ids must differ, got {ids}")
        return self

    @property
    def total_slots(self) -> int:
        return self.window + self.future

    @property
    def copies(self) -> int:
        return 1 if self.single_sequence else 2

    @property
    def label_token_ids(self) -> tuple[int, int]:
        return self.inactive_token_id, self.active_token_id

    @property
    def slot_token_ids(self) -> tuple[int, int, int]:
        """Indexed by slot state: 0 inactive, 1 active, 2 masked."""
        return self.inactive_token_id, self.active_token_id, self.activation_token_id

    def check_vocab(self, vocab_size: int, where: str = "model") -> None:
        worst = max(self.activation_token_id, self.active_token_id, self.inactive_token_id)
        if worst >= vocab_size:
            raise ConfigError(f"STRIDE token id {worst} is outside the {where}'s vocabulary ({vocab_size}); "
                              f"resize the model to the tokenizer (stvl_jax.models.stride.prepare_model)")

    @classmethod
    def from_tokenizer(cls, tokenizer, **fields) -> "StrideConfig":
        """Token ids looked up in an HF tokenizer (which must already hold the three tokens)."""
        vocab = tokenizer.get_vocab()
        missing = [t for t in TOKENS if t not in vocab]
        if missing:
            raise ConfigError(f"tokenizer lacks the STRIDE tokens {missing} (add them: add_stride_tokens)")
        return cls(activation_token_id=vocab[ACTIVATION], active_token_id=vocab[ACTIVE],
                   inactive_token_id=vocab[INACTIVE], **fields)


def add_stride_tokens(tokenizer) -> int:
    """Add the three tokens as special tokens (the reference's `add_tokens(..., special_tokens=True)`);
    returns how many were new. Resize the model to `len(tokenizer)` afterwards."""
    return tokenizer.add_tokens(list(TOKENS), special_tokens=True)


def recorded_settings(path: str | Path) -> dict:
    """STRIDE settings a checkpoint records -> {"window": StrideConfig fields, "fps": clip frames per second or
    None}; empty where unknown. Sources, in its stvl_config.json (for an HF directory, what import would write):
    the "stride" section training writes, else a STRIDE hub config.json (`trigger_window_past`, ...). The
    preprocessing is the model's own (`load_model(...).preprocessing`)."""
    from stvl_jax.models.qwen_vl.loading import read_config

    info = read_config(path)[1]  # an HF directory: its own config.json is the hf_config
    hf = (info.get("source") or {}).get("hf_config") or {}
    window = {ours: hf[key] for key, ours in HF_KEYS.items() if hf.get(key) is not None}
    trained = info.get("stride") or {}
    if not isinstance(trained, dict):
        raise CheckpointError(f"{str(path)!r}: the 'stride' section of its stvl_config.json is not a mapping")
    window.update({k: trained[k] for k in ("window", "resolution", "single_sequence") if k in trained})
    return {"window": window, "fps": trained.get("fps")}
