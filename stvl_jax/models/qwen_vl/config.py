"""Architecture config of the Qwen-VL family (Qwen3-VL and Qwen2.5-VL), nested: `vision`, `text`.

Only what defines the network lives here (compute dtype, remat, mesh are runtime options; how pixels are prepared
is the checkpoint's `PreprocessConfig`, `host/preprocess.py`). The mapping to and from HF `config.json` is in
`converters/qwen_vl_config.py`.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from stvl_jax.config_base import StrictConfig
from stvl_jax.errors import ConfigError
from stvl_jax.models.qwen_vl.host.positions import PositionsConfig
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig

Family = Literal["qwen3_vl", "qwen2_5_vl"]


class VisionConfig(StrictConfig):
    depth: int = pydantic.Field(gt=0)
    hidden_size: int = pydantic.Field(gt=0)
    intermediate_size: int = pydantic.Field(gt=0)
    num_heads: int = pydantic.Field(gt=0)
    out_hidden_size: int = pydantic.Field(gt=0)
    in_channels: int = 3
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    hidden_act: str = "gelu_pytorch_tanh"
    rope_theta: float = 10000.0
    # Qwen3-VL: learned position table (num_position_embeddings = side^2), DeepStack taps
    num_position_embeddings: int | None = None
    deepstack_visual_indexes: tuple[int, ...] = ()
    # Qwen2.5-VL: window attention and absolute-time video positions
    window_size: int | None = None
    fullatt_block_indexes: tuple[int, ...] = ()
    tokens_per_second: float | None = None
    initializer_range: float = pydantic.Field(default=0.02, gt=0)  # std of freshly initialised weights (as HF)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def channels_last_row(self) -> tuple[int, int]:
        """Shape of one raw uint8 patch row in the channels-last layout: (T*P*P, C)."""
        return self.temporal_patch_size * self.patch_size**2, self.in_channels

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size**2

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"vision hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}")
        if self.head_dim % 4:
            raise ValueError(f"vision head_dim {self.head_dim} must be a multiple of 4 (2-D RoPE)")
        if len(set(self.deepstack_visual_indexes)) != len(self.deepstack_visual_indexes):
            raise ValueError(f"duplicate deepstack_visual_indexes {self.deepstack_visual_indexes}")
        bad = [i for i in (*self.deepstack_visual_indexes, *self.fullatt_block_indexes) if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"vision block indexes {bad} out of range for depth {self.depth}")
        return self


class TextConfig(StrictConfig):
    vocab_size: int = pydantic.Field(gt=0)
    hidden_size: int = pydantic.Field(gt=0)
    intermediate_size: int = pydantic.Field(gt=0)
    num_hidden_layers: int = pydantic.Field(gt=0)
    num_attention_heads: int = pydantic.Field(gt=0)
    num_key_value_heads: int = pydantic.Field(gt=0)
    head_dim: int = pydantic.Field(gt=0)
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    mrope_section: tuple[int, int, int]
    mrope_interleaved: bool  # Qwen3-VL: interleaved T/H/W frequencies; Qwen2.5-VL: chunked
    attention_bias: bool = False  # q/k/v bias (Qwen2.5-VL: True)
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3-VL: True)
    max_position_embeddings: int = 128000
    initializer_range: float = pydantic.Field(default=0.02, gt=0)  # std of freshly initialised weights (as HF)

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if sum(self.mrope_section) * 2 != self.head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}")
        return self


class QwenVLConfig(StrictConfig):
    family: Family
    vision: VisionConfig
    text: TextConfig
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False
    eos_token_id: tuple[int, ...] = ()
    pad_token_id: int | None = None
    # Qwen2.5-VL only: where text resumes after a multi-frame video. "transformers" = transformers 5.x
    # (start + max(h, w) / merge), "qwen" = the original release (1 + max position used by the video).
    video_position_advance: Literal["transformers", "qwen"] = "transformers"
    architecture: str = ""  # HF `architectures[0]` to write on export ("" = the family's default)

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(
                f"vision.out_hidden_size {self.vision.out_hidden_size} != text.hidden_size {self.text.hidden_size}"
            )
        if self.family == "qwen3_vl" and not self.vision.num_position_embeddings:
            raise ValueError("qwen3_vl needs vision.num_position_embeddings")
        if self.family == "qwen2_5_vl" and not self.vision.window_size:
            raise ValueError("qwen2_5_vl needs vision.window_size")
        if self.family == "qwen2_5_vl" and self.vision.deepstack_visual_indexes:
            raise ValueError("qwen2_5_vl has no deepstack")
        return self

    @property
    def positions(self) -> PositionsConfig:
        """The M-RoPE settings a host needs (`host.positions`) besides family and merge size."""
        return PositionsConfig(tokens_per_second=self.vision.tokens_per_second or 1,
                               video_position_advance=self.video_position_advance)

    def default_preprocessing(self) -> PreprocessConfig:
        """The family's HF default preprocessing with this network's patch, temporal patch and merge sizes."""
        vc = self.vision
        return PreprocessConfig.default(self.family, patch_size=vc.patch_size,
                                        temporal_patch_size=vc.temporal_patch_size,
                                        merge_size=vc.spatial_merge_size)

    def check_preprocessing(self, pre: PreprocessConfig, where: str = "preprocessing") -> PreprocessConfig:
        """`pre` if it produces this network's inputs (family, patch sizes), else `ConfigError` naming both."""
        vc = self.vision
        want = {"family": self.family, "patch_size": vc.patch_size, "temporal_patch_size": vc.temporal_patch_size,
                "merge_size": vc.spatial_merge_size}
        bad = {k: (getattr(pre, k), v) for k, v in want.items() if getattr(pre, k) != v}
        if bad:
            raise ConfigError(f"{where} does not fit the model: " + ", ".join(
                f"{k} {got!r} but the model has {v!r}" for k, (got, v) in bad.items()))
        return pre
