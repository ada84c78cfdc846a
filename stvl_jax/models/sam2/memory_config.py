"""Typed configs of SAM2's video memory: memory encoder, memory attention, memory bank (strict, frozen).

Field defaults are those of transformers' `Sam2VideoConfig` (the SAM2.1 release). `from_hf(d)` reads the
corresponding flat `Sam2VideoConfig` fields (a `config.json` dict or `Sam2VideoConfig.to_dict()`); keys this
module does not own are ignored there (they belong to the image path), but our own configs refuse unknown keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pydantic

from stvl_jax.config_base import StrictConfig
from stvl_jax.errors import ConfigError
from stvl_jax.nn.mlp import ACTIVATIONS

_HF_MODEL_TYPES = ("sam2_video",)


# {our field: HF `Sam2VideoConfig` key} of each config (the video config's `to_hf` writes them back)
ENCODER_HF_KEYS = {
    "hidden_size": "memory_encoder_hidden_size", "output_channels": "memory_encoder_output_channels",
    "downsampler_embed_dim": "mask_downsampler_embed_dim",
    "downsampler_kernel_size": "mask_downsampler_kernel_size",
    "downsampler_stride": "mask_downsampler_stride", "downsampler_padding": "mask_downsampler_padding",
    "downsampler_total_stride": "mask_downsampler_total_stride",
    "downsampler_act": "mask_downsampler_hidden_act", "fuser_num_layers": "memory_fuser_num_layers",
    "fuser_embed_dim": "memory_fuser_embed_dim", "fuser_intermediate_dim": "memory_fuser_intermediate_dim",
    "fuser_kernel_size": "memory_fuser_kernel_size", "fuser_padding": "memory_fuser_padding",
    "fuser_layer_scale_init_value": "memory_fuser_layer_scale_init_value",
    "fuser_act": "memory_fuser_hidden_act",
}
ATTENTION_HF_KEYS = {
    "hidden_size": "memory_attention_hidden_size", "num_layers": "memory_attention_num_layers",
    "num_heads": "memory_attention_num_attention_heads",
    "downsample_rate": "memory_attention_downsample_rate",
    "ffn_hidden_size": "memory_attention_feed_forward_hidden_size",
    "ffn_act": "memory_attention_feed_forward_hidden_act", "dropout": "memory_attention_dropout",
    "rope_feat_sizes": "memory_attention_rope_feat_sizes", "rope_dropout": "memory_attention_rope_dropout",
}  # + rope_parameters["rope_theta"]
BANK_HF_KEYS = {k: k for k in ("num_maskmem", "max_cond_frame_num", "max_object_pointers_in_encoder",
                              "enable_temporal_pos_encoding_for_object_pointers", "enable_occlusion_spatial_embedding",
                              "sigmoid_scale_for_mem_enc", "sigmoid_bias_for_mem_enc")}
BANK_HF_KEYS["mem_dim"] = "memory_encoder_output_channels"  # hidden_dim: the FPN width (vision_config)


def _check_hf(d: Mapping[str, Any]) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(f"SAM2 video config must be a mapping, got {type(d).__name__}")
    model_type = d.get("model_type", "sam2_video")
    if model_type not in _HF_MODEL_TYPES:
        raise ConfigError(f"SAM2 video config: model_type {model_type!r} has no video memory "
                          f"(expected one of {list(_HF_MODEL_TYPES)})")


def _check_act(**acts: str) -> None:
    for field, name in acts.items():
        if name not in ACTIVATIONS:
            raise ValueError(f"{field} {name!r} is not a known activation ({sorted(ACTIVATIONS)})")


def _read(cls, d: Mapping[str, Any], names: Mapping[str, str], extra: Mapping[str, Any] = ()) -> Any:
    """cls from the HF keys `names` {our field: HF key}; absent keys keep HF's default (= ours)."""
    _check_hf(d)
    data = {ours: d[hf] for ours, hf in names.items() if d.get(hf) is not None}
    data.update(extra)
    return cls.from_dict(data, source=f"SAM2 video config ({cls.__name__})")


class MemoryEncoderConfig(StrictConfig):
    """Mask downsampler (strided convs to the backbone stride) + fuser (ConvNeXt blocks) + projection."""

    hidden_size: int = 256  # width of the pixel features it fuses (the FPN width)
    output_channels: int = 64  # memory channels (mem_dim)
    downsampler_embed_dim: int = 256
    downsampler_kernel_size: int = 3
    downsampler_stride: int = 2
    downsampler_padding: int = 1
    downsampler_total_stride: int = 16
    downsampler_act: str = "gelu"
    fuser_num_layers: int = 2
    fuser_embed_dim: int = 256
    fuser_intermediate_dim: int = 1024
    fuser_kernel_size: int = 7
    fuser_padding: int = 3
    fuser_layer_scale_init_value: float = 1e-6
    fuser_act: str = "gelu"

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if not (self.hidden_size == self.downsampler_embed_dim == self.fuser_embed_dim):
            raise ValueError(f"hidden_size ({self.hidden_size}), downsampler_embed_dim ({self.downsampler_embed_dim}) "
                             f"and fuser_embed_dim ({self.fuser_embed_dim}) must be equal: the downsampled mask is "
                             "added to the projected pixel features, which then go through the fuser")
        _check_act(downsampler_act=self.downsampler_act, fuser_act=self.fuser_act)
        if self.output_channels % 2:
            raise ValueError(f"output_channels ({self.output_channels}) must be even (sine position encoding)")
        if self.downsampler_stride < 2 or self.num_downsampler_layers < 1:
            raise ValueError(f"downsampler_total_stride {self.downsampler_total_stride} must be a power (>= 1) "
                             f"of downsampler_stride {self.downsampler_stride} (>= 2)")
        return self

    @property
    def num_downsampler_layers(self) -> int:
        # as HF/Meta: int(log2(total) // log2(stride))
        return int(math.log2(self.downsampler_total_stride) // math.log2(max(self.downsampler_stride, 2)))

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> "MemoryEncoderConfig":
        return _read(cls, d, ENCODER_HF_KEYS)


class MemoryAttentionConfig(StrictConfig):
    """Self + cross attention layers with 2-D axial RoPE that condition the frame's features on the memory."""

    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 1
    downsample_rate: int = 1
    ffn_hidden_size: int = 2048
    ffn_act: str = "relu"
    dropout: float = 0.1  # training only (not applied by the inference forward)
    rope_feat_sizes: tuple[int, int] = (64, 64)  # (width, height) of the feature grid the RoPE covers
    rope_theta: float = 10000.0
    rope_dropout: float = 0.1  # training only
    kv_in_dim: int = 64  # memory channels; transformers hard-codes 64 (= memory_encoder_output_channels)

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        _check_act(ffn_act=self.ffn_act)
        internal = self.hidden_size // self.downsample_rate
        if self.hidden_size % self.downsample_rate or internal % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} / downsample_rate {self.downsample_rate} must be a "
                             f"whole multiple of num_heads {self.num_heads}")
        if self.head_dim % 4:
            raise ValueError(f"head_dim {self.head_dim} must be a multiple of 4 (2-D axial RoPE: x and y halves, "
                             "rotated in pairs)")
        return self

    @property
    def internal_dim(self) -> int:
        return self.hidden_size // self.downsample_rate

    @property
    def head_dim(self) -> int:
        return self.internal_dim // self.num_heads

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> "MemoryAttentionConfig":
        rope = d.get("rope_parameters") or {}
        if rope.get("rope_type", "axial") != "axial":
            raise ConfigError(f"SAM2 video config: rope_type {rope.get('rope_type')!r} is not supported "
                              "(memory attention uses 'axial')")
        theta = rope.get("rope_theta", d.get("memory_attention_rope_theta", 10000.0))
        return _read(cls, d, ATTENTION_HF_KEYS, {"rope_theta": float(theta)})


class MemoryBankConfig(StrictConfig):
    """Which memories a frame attends to, and the learned embeddings that position them in time."""

    hidden_dim: int = 256  # SAM width (FPN / decoder): object pointers have this size
    mem_dim: int = 64  # memory channels
    num_maskmem: int = 7  # spatial memories: conditioning frames + the num_maskmem - 1 previous frames
    max_cond_frame_num: int = -1  # -1: every conditioning frame
    max_object_pointers_in_encoder: int = 16
    enable_temporal_pos_encoding_for_object_pointers: bool = True
    enable_occlusion_spatial_embedding: bool = True
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if self.hidden_dim % self.mem_dim:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be a multiple of mem_dim {self.mem_dim} (object "
                             "pointers are split into hidden_dim / mem_dim memory tokens)")
        if self.max_cond_frame_num == 0 or self.max_cond_frame_num < -1:
            raise ValueError(f"max_cond_frame_num must be -1 (all) or >= 1, got {self.max_cond_frame_num}")
        if self.num_maskmem < 1 or self.max_object_pointers_in_encoder < 1:
            raise ValueError("num_maskmem and max_object_pointers_in_encoder must be >= 1")
        return self

    @property
    def pointer_splits(self) -> int:
        return self.hidden_dim // self.mem_dim

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> "MemoryBankConfig":
        vision = d.get("vision_config") or {}
        if not isinstance(vision, Mapping):
            vision = vision.to_dict()
        extra = {"hidden_dim": vision["fpn_hidden_size"]} if "fpn_hidden_size" in vision else {}
        return _read(cls, d, BANK_HF_KEYS, extra)
