"""Architecture config of SAM2's image path, nested like transformers' `Sam2Config`:

    Sam2Config
      vision: VisionConfig          (HF `vision_config`: FPN neck)
        backbone: HieraConfig       (HF `vision_config.backbone_config`: Hiera trunk)
      prompt_encoder: PromptEncoderConfig
      mask_decoder: MaskDecoderConfig

`from_hf(config_json_dict)` reads an HF `config.json` (model_type `sam2`, or the image part of `sam2_video`)
and `to_hf` writes one back. HF's generic `PreTrainedConfig` keys (`architectures`, `id2label`, ...) are
ignored; any other unknown key is refused. The video fields (memory attention / encoder, object pointers) are
not read here: `split_hf` hands them to the video config's own reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic

from stvl_jax.config_base import StrictConfig
from stvl_jax.errors import ConfigError

Pair = tuple[int, int]


class HieraConfig(StrictConfig):
    """Hiera trunk (HF `Sam2HieraDetConfig`). Stage s has `blocks_per_stage[s]` blocks of width
    `embed_dim_per_stage[s]`; the first block of stages 1..num_query_pool_stages max-pools its queries by
    `query_stride`; blocks listed in `global_attention_blocks` (global block index) attend over the whole map."""

    hidden_size: int = 96
    num_attention_heads: int = 1
    num_channels: int = 3
    image_size: Pair = (1024, 1024)
    patch_kernel_size: Pair = (7, 7)
    patch_stride: Pair = (4, 4)
    patch_padding: Pair = (3, 3)
    query_stride: Pair = (2, 2)
    window_positional_embedding_background_size: Pair = (7, 7)
    num_query_pool_stages: int = 3
    blocks_per_stage: tuple[int, ...] = (1, 2, 7, 2)
    embed_dim_per_stage: tuple[int, ...] = (96, 192, 384, 768)
    num_attention_heads_per_stage: tuple[int, ...] = (1, 2, 4, 8)
    window_size_per_stage: tuple[int, ...] = (8, 4, 14, 7)
    global_attention_blocks: tuple[int, ...] = (5, 7, 9)
    mlp_ratio: float = 4.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    @pydantic.field_validator("image_size", "patch_kernel_size", "patch_stride", "patch_padding", "query_stride",
                              "window_positional_embedding_background_size", mode="before")
    @classmethod
    def _pair(cls, v):
        return (v, v) if isinstance(v, int) else v

    @pydantic.model_validator(mode="after")
    def _check(self):
        n = len(self.blocks_per_stage)
        for name in ("embed_dim_per_stage", "num_attention_heads_per_stage", "window_size_per_stage"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} stages")
        if self.embed_dim_per_stage[0] != self.hidden_size:
            raise ValueError(f"embed_dim_per_stage[0] {self.embed_dim_per_stage[0]} != hidden_size "
                             f"{self.hidden_size}")
        for d, h in zip(self.embed_dim_per_stage, self.num_attention_heads_per_stage):
            if d % h:
                raise ValueError(f"stage width {d} not divisible by {h} heads")
        if not 0 <= self.num_query_pool_stages < n:
            raise ValueError(f"num_query_pool_stages {self.num_query_pool_stages} must be in [0, {n})")
        depth = sum(self.blocks_per_stage)
        bad = [i for i in self.global_attention_blocks if not 0 <= i < depth]
        if bad:
            raise ValueError(f"global_attention_blocks {bad} out of range for {depth} blocks")
        for s in range(1, self.num_query_pool_stages + 1):
            if self.stage_start(s) in self.global_attention_blocks:
                raise ValueError(f"block {self.stage_start(s)} pools queries (first of stage {s}); it cannot be a "
                                 "global-attention block")
        return self

    @property
    def depth(self) -> int:
        return sum(self.blocks_per_stage)

    def stage_start(self, stage: int) -> int:
        return sum(self.blocks_per_stage[:stage])

    @property
    def stage_ends(self) -> tuple[int, ...]:
        return tuple(self.stage_start(s + 1) - 1 for s in range(len(self.blocks_per_stage)))


class VisionConfig(StrictConfig):
    """Hiera + FPN neck (HF `Sam2VisionConfig`). `backbone_channel_list` is the stage widths from the last
    (lowest resolution) stage to the first; `fpn_top_down_levels` are the stage indexes that receive the 2x
    nearest-upsampled coarser FPN level; the decoder uses the `num_feature_levels` finest levels."""

    backbone: HieraConfig = HieraConfig()
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)
    backbone_feature_sizes: tuple[Pair, ...] = ((256, 256), (128, 128), (64, 64))
    fpn_hidden_size: int = 256
    fpn_kernel_size: int = 1
    fpn_stride: int = 1
    fpn_padding: int = 0
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    num_feature_levels: int = 3
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    @pydantic.model_validator(mode="after")
    def _check(self):
        widths = tuple(reversed(self.backbone.embed_dim_per_stage))
        if self.backbone_channel_list != widths:
            raise ValueError(f"backbone_channel_list {self.backbone_channel_list} must be the stage widths from "
                             f"last to first {widths}")
        if not 1 <= self.num_feature_levels <= len(widths):
            raise ValueError(f"num_feature_levels {self.num_feature_levels} out of range for {len(widths)} stages")
        if self.fpn_hidden_size % 2:
            raise ValueError(f"fpn_hidden_size {self.fpn_hidden_size} must be even (sine position encoding)")
        return self


class PromptEncoderConfig(StrictConfig):
    """Points / boxes / mask prompts (HF `Sam2PromptEncoderConfig`); the image embedding is
    `image_size // patch_size` on a side, mask prompts `4x` that."""

    hidden_size: int = 256
    image_size: int = 1024
    patch_size: int = 16
    mask_input_channels: int = 16
    num_point_embeddings: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    scale: int | float = 1  # std of the random Fourier matrix (HF writes an int)

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        return 4 * self.embedding_size

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.hidden_size % 2:
            raise ValueError(f"prompt encoder hidden_size {self.hidden_size} must be even (Fourier features)")
        if self.mask_input_channels % 4:
            raise ValueError(f"mask_input_channels {self.mask_input_channels} must be a multiple of 4")
        if self.num_point_embeddings < 4:
            raise ValueError("num_point_embeddings must be >= 4 (labels 0/1 and the two box corners)")
        return self


class MaskDecoderConfig(StrictConfig):
    """Two-way transformer + heads (HF `Sam2MaskDecoderConfig`). The two-way MLP has `num_hidden_layers`
    layers (HF ties its depth to the layer count); stability delta/threshold drive the dynamic single-mask
    fallback."""

    hidden_size: int = 256
    hidden_act: str = "gelu"
    mlp_dim: int = 2048
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    @pydantic.model_validator(mode="after")
    def _check(self):
        internal = self.hidden_size // self.attention_downsample_rate
        if self.hidden_size % self.num_attention_heads or internal % self.num_attention_heads:
            raise ValueError(f"decoder width {self.hidden_size} (/{self.attention_downsample_rate}) not divisible "
                             f"by {self.num_attention_heads} heads")
        if self.hidden_size % 8:
            raise ValueError(f"decoder hidden_size {self.hidden_size} must be a multiple of 8 (upscaling)")
        return self


class Sam2Config(StrictConfig):
    vision: VisionConfig = VisionConfig()
    prompt_encoder: PromptEncoderConfig = PromptEncoderConfig()
    mask_decoder: MaskDecoderConfig = MaskDecoderConfig()
    initializer_range: float = 0.02

    @property
    def image_size(self) -> int:
        """The model's square input size in pixels."""
        return self.prompt_encoder.image_size

    @pydantic.model_validator(mode="after")
    def _check(self):
        d = self.vision.fpn_hidden_size
        if self.prompt_encoder.hidden_size != d or self.mask_decoder.hidden_size != d:
            raise ValueError(f"prompt encoder ({self.prompt_encoder.hidden_size}) and mask decoder "
                             f"({self.mask_decoder.hidden_size}) widths must equal fpn_hidden_size {d}")
        if self.vision.num_feature_levels != 3:
            raise ValueError("the mask decoder needs num_feature_levels == 3 (two high-res skips + embedding)")
        return self


# ---------------------------------------------------------------------------------------------- HF config.json
# keys every HF PreTrainedConfig writes that say nothing about the architecture: transformers 5's, and the
# generation/tokenizer defaults that transformers 4.x wrote into every (sub-)config of a config.json
HF_GENERIC_KEYS = frozenset({
    "_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "torch_dtype", "id2label", "label2id",
    "is_encoder_decoder", "output_attentions", "output_hidden_states", "problem_type", "return_dict",
    "model_type", "transformers_version", "tie_word_embeddings", "_attn_implementation_autoset",
    # transformers 4.x
    "add_cross_attention", "bad_words_ids", "begin_suppress_tokens", "bos_token_id", "cross_attention_hidden_size",
    "decoder_start_token_id", "diversity_penalty", "do_sample", "early_stopping", "encoder_no_repeat_ngram_size",
    "eos_token_id", "exponential_decay_length_penalty", "finetuning_task", "forced_bos_token_id",
    "forced_eos_token_id", "is_decoder", "length_penalty", "max_length", "min_length", "no_repeat_ngram_size",
    "num_beam_groups", "num_beams", "num_return_sequences", "output_scores", "pad_token_id", "prefix",
    "pruned_heads", "remove_invalid_values", "repetition_penalty", "return_dict_in_generate", "sep_token_id",
    "suppress_tokens", "task_specific_params", "temperature", "tf_legacy_loss", "tie_encoder_decoder",
    "tokenizer_class", "top_k", "top_p", "torchscript", "typical_p", "use_bfloat16",
})
MODEL_TYPES = ("sam2", "sam2_video")
_SECTIONS = {"vision_config": "vision", "prompt_encoder_config": "prompt_encoder",
             "mask_decoder_config": "mask_decoder"}
_IMAGE_TOP_KEYS = frozenset(_SECTIONS) | {"initializer_range"}


def _strip(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in HF_GENERIC_KEYS}


def split_hf(hf: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An HF SAM2 config.json dict -> (image-path keys, the other top-level keys: the video fields of a
    `sam2_video` config, left to the video config's reader). Refuses a config of another model type."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"config.json model_type {model_type!r} is not a SAM2 config (expected one of "
                          f"{MODEL_TYPES})")
    image = {k: v for k, v in hf.items() if k in _IMAGE_TOP_KEYS}
    rest = {k: v for k, v in _strip(hf).items() if k not in _IMAGE_TOP_KEYS}
    return image, rest


def from_hf(hf: Mapping[str, Any], *, allow_video_keys: bool | None = None) -> Sam2Config:
    """Sam2Config from an HF config.json dict. Keys outside the image path are refused for `sam2` configs and
    ignored (left to the video reader) for `sam2_video` ones, unless `allow_video_keys` says otherwise."""
    image, rest = split_hf(hf)
    if allow_video_keys is None:
        allow_video_keys = hf.get("model_type") == "sam2_video"
    if rest and not allow_video_keys:
        raise ConfigError(f"invalid SAM2 config.json: unknown key(s) {sorted(rest)}")
    data: dict[str, Any] = {}
    if "initializer_range" in image:
        data["initializer_range"] = image["initializer_range"]
    for hf_key, ours in _SECTIONS.items():
        section = image.get(hf_key)
        if section is None:
            continue
        section = _strip(section)
        if ours == "vision" and section.get("backbone_config") is not None:
            section["backbone"] = _strip(section.pop("backbone_config"))
        section.pop("backbone_config", None)
        data[ours] = section
    return Sam2Config.from_dict(data, source="SAM2 config.json")


def to_hf(config: Sam2Config) -> dict[str, Any]:
    """The HF `Sam2Config` dict (model_type `sam2`) of `config`, loadable by `Sam2Config(**d)`."""
    d = config.to_dict()
    vision = d["vision"]
    backbone = {**vision.pop("backbone"), "model_type": "sam2_hiera_det_model"}
    return {
        "model_type": "sam2",
        "architectures": ["Sam2Model"],
        "initializer_range": d["initializer_range"],
        "vision_config": {**vision, "backbone_config": backbone, "model_type": "sam2_vision_model"},
        "prompt_encoder_config": {**d["prompt_encoder"], "model_type": "sam2_prompt_encoder"},
        "mask_decoder_config": {**d["mask_decoder"], "model_type": "sam2_mask_decoder"},
    }
