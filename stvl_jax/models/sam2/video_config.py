"""Typed config of SAM2's video model (transformers `Sam2VideoConfig`, model_type `sam2_video`):

    Sam2VideoConfig
      image: Sam2Config                       (vision / prompt encoder / mask decoder, `config.from_hf`)
      memory_encoder: MemoryEncoderConfig     (memory_config)
      memory_attention: MemoryAttentionConfig
      memory_bank: MemoryBankConfig
      tracking: TrackingConfig                (when the decoder outputs several masks)

`from_hf(config_json_dict)` reads a `sam2_video` config.json (HF's flat top-level keys); every key is either
read or one of HF's generic `PreTrainedConfig` keys; an unknown key is refused. `to_hf` writes one back that
`transformers.Sam2VideoConfig(**d)` loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from stvl_jax.config_base import StrictConfig
from stvl_jax.errors import ConfigError
from stvl_jax.models.sam2 import config as image_config
from stvl_jax.models.sam2.config import Sam2Config
from stvl_jax.models.sam2.memory_config import (ATTENTION_HF_KEYS, BANK_HF_KEYS, ENCODER_HF_KEYS,
                                                MemoryAttentionConfig, MemoryBankConfig, MemoryEncoderConfig)


class TrackingConfig(StrictConfig):
    """Multimask rules of the tracker (HF / Meta names): a prompted frame with between `multimask_min_pt_num`
    and `multimask_max_pt_num` clicks (and no box) gets 3 candidate masks, the best by predicted IoU kept;
    tracked frames get them when `multimask_output_for_tracking`."""

    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True

    def multimask_for_prompt(self, num_points: int) -> bool:
        """HF `_use_multimask` for a prompted frame with `num_points` points (a box counts as 2)."""
        return self.multimask_output_in_sam and self.multimask_min_pt_num <= num_points <= self.multimask_max_pt_num


TRACKING_HF_KEYS = {k: k for k in TrackingConfig.model_fields}


class Sam2VideoConfig(StrictConfig):
    image: Sam2Config = Sam2Config()
    memory_encoder: MemoryEncoderConfig = MemoryEncoderConfig()
    memory_attention: MemoryAttentionConfig = MemoryAttentionConfig()
    memory_bank: MemoryBankConfig = MemoryBankConfig()
    tracking: TrackingConfig = TrackingConfig()

    @pydantic.model_validator(mode="after")
    def _check(self):
        d = self.image.vision.fpn_hidden_size
        enc, att, bank = self.memory_encoder, self.memory_attention, self.memory_bank
        for name, value in (("memory_encoder.hidden_size", enc.hidden_size), ("memory_attention.hidden_size",
                            att.hidden_size), ("memory_bank.hidden_dim", bank.hidden_dim)):
            if value != d:
                raise ValueError(f"{name} {value} must equal the FPN width {d}")
        if not enc.output_channels == att.kv_in_dim == bank.mem_dim:
            raise ValueError(f"memory channels differ: memory_encoder.output_channels {enc.output_channels}, "
                             f"memory_attention.kv_in_dim {att.kv_in_dim}, memory_bank.mem_dim {bank.mem_dim}")
        e = self.image.prompt_encoder.embedding_size
        if tuple(att.rope_feat_sizes) != (e, e):
            raise ValueError(f"memory_attention.rope_feat_sizes {tuple(att.rope_feat_sizes)} must be the image "
                             f"embedding grid ({e}, {e})")
        if self.image.prompt_encoder.image_size != self.image_size:
            raise ValueError(f"prompt encoder image_size {self.image.prompt_encoder.image_size} != the backbone's "
                             f"{self.image_size}")
        if enc.downsampler_total_stride * e != self.image_size:
            raise ValueError(f"mask_downsampler_total_stride {enc.downsampler_total_stride} must bring the "
                             f"{self.image_size}-pixel mask to the {e}x{e} embedding grid")
        return self

    @property
    def image_size(self) -> int:
        return int(self.image.vision.backbone.image_size[0])

    @property
    def embedding_size(self) -> int:
        return self.image.prompt_encoder.embedding_size


_VIDEO_KEYS = (frozenset(ENCODER_HF_KEYS.values()) | set(ATTENTION_HF_KEYS.values()) | set(BANK_HF_KEYS.values())
               | set(TRACKING_HF_KEYS.values()) | {"rope_parameters", "image_size"})


def from_hf(hf: Mapping[str, Any]) -> Sam2VideoConfig:
    """Sam2VideoConfig from an HF `sam2_video` config.json dict (or `Sam2VideoConfig.to_dict()`)."""
    if not isinstance(hf, Mapping) or hf.get("model_type") != "sam2_video":
        got = hf.get("model_type") if isinstance(hf, Mapping) else type(hf).__name__
        raise ConfigError(f"config.json model_type {got!r} is not a SAM2 video config (expected 'sam2_video')")
    _, rest = image_config.split_hf(hf)
    unknown = sorted(set(rest) - _VIDEO_KEYS)
    if unknown:
        raise ConfigError(f"invalid SAM2 video config.json: unknown key(s) {unknown}")
    image = image_config.from_hf(hf)
    size = hf.get("image_size")
    if size is not None and (size if isinstance(size, int) else tuple(size)) not in (
            image.vision.backbone.image_size[0], tuple(image.vision.backbone.image_size)):
        raise ConfigError(f"invalid SAM2 video config.json: image_size {size} differs from the backbone's "
                          f"{tuple(image.vision.backbone.image_size)}")
    tracking = {k: hf[v] for k, v in TRACKING_HF_KEYS.items() if hf.get(v) is not None}
    try:
        return Sam2VideoConfig(image=image, memory_encoder=MemoryEncoderConfig.from_hf(hf),
                               memory_attention=MemoryAttentionConfig.from_hf(hf),
                               memory_bank=MemoryBankConfig.from_hf(hf),
                               tracking=TrackingConfig.from_dict(tracking, source="SAM2 video config.json"))
    except pydantic.ValidationError as e:
        raise ConfigError(f"invalid SAM2 video config.json: {e.errors()[0]['msg']}") from None


def to_hf(config: Sam2VideoConfig) -> dict[str, Any]:
    """The HF `Sam2VideoConfig` dict (model_type `sam2_video`) of `config`."""
    d = image_config.to_hf(config.image)
    d.update(model_type="sam2_video", architectures=["Sam2VideoModel"], image_size=config.image_size)
    for cfg, names in ((config.memory_encoder, ENCODER_HF_KEYS), (config.memory_attention, ATTENTION_HF_KEYS),
                       (config.memory_bank, BANK_HF_KEYS), (config.tracking, TRACKING_HF_KEYS)):
        values = cfg.to_dict()
        for ours, hf in names.items():
            v = values[ours]
            d[hf] = list(v) if isinstance(v, tuple) else v
    d["rope_parameters"] = {"rope_type": "axial", "rope_theta": config.memory_attention.rope_theta}
    return d
