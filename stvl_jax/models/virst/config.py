"""Typed config of a VIRST model (AIDASLab/VIRST, CVPR 2026) built on this project's Qwen-VL and SAM2:

    VirstConfig
      llm: QwenVLConfig           the video LLM (Qwen3-VL or Qwen2.5-VL; VIRST's own VideoChat-Flash is not built)
      sam2: Sam2VideoConfig       the segmentation model (VIRST: SAM2.1 Hiera-L, 1024 px)
      seg: SegTokenConfig         [SEG] token text, id, count per video / image expression
      prompter: PrompterConfig    SegPrompter (post-LLM fusion: cross-attention with 3D RoPE)
      initial_fusion: InitialFusionConfig   pre-LLM fusion of the [SEG] input embeddings (off by default)
      anchors: AnchorConfig       how many SAM2 frames, multimask at evaluation

Defaults are the upstream values (model/VIRST.py, model/seg_prompter.py, utils/argument.py).
"""

from __future__ import annotations

import pydantic

from stvl_jax.config_base import StrictConfig
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.sam2.video_config import Sam2VideoConfig


class SegTokenConfig(StrictConfig):
    """The [SEG] token: `token_id` is its row in the (resized) vocabulary (`seg_tokens.add_seg_token`)."""

    text: str = "[SEG]"
    token_id: int | None = pydantic.Field(default=None, ge=0)  # None until the token was added to the vocab
    per_video: int = pydantic.Field(default=10, gt=0)  # upstream: seg_token_num hard-coded 10 for video
    per_image: int = pydantic.Field(default=1, gt=0)  # 1 for image referring / reasoning segmentation


class PrompterConfig(StrictConfig):
    """SegPrompter sizes. `token_dim` must be SAM2's prompt width (its sparse prompts are replaced);
    `down_layers` stride-2 3x3 convs bring SAM2's e x e features to the memory grid (64 -> 8 upstream)."""

    token_dim: int = pydantic.Field(default=256, gt=0)
    num_heads: int = pydantic.Field(default=8, gt=0)
    num_layers: int = pydantic.Field(default=2, gt=0)
    ffn_dim: int = pydantic.Field(default=1024, gt=0)  # 4 * token_dim upstream
    dropout: float = pydantic.Field(default=0.1, ge=0, lt=1)
    down_layers: int = pydantic.Field(default=3, ge=0)
    max_frames: int = pydantic.Field(default=100, gt=0)  # upstream max_length: T_seg above it is refused
    rope_theta: float = pydantic.Field(default=10000.0, gt=0)
    layer_norm_eps: float = pydantic.Field(default=1e-5, gt=0)  # torch nn.LayerNorm default

    @property
    def head_dim(self) -> int:
        return self.token_dim // self.num_heads

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.token_dim % self.num_heads:
            raise ValueError(f"prompter token_dim {self.token_dim} not divisible by num_heads {self.num_heads}")
        if self.head_dim < 6:
            raise ValueError(f"prompter head_dim {self.head_dim} too small for 3D RoPE (t, y, x pairs need >= 6)")
        return self


class InitialFusionConfig(StrictConfig):
    """Pre-LLM fusion (upstream `InitialSegFusion`; `initial_seg_fusion` False in the released evaluation)."""

    enabled: bool = False
    num_heads: int = pydantic.Field(default=8, gt=0)
    gate_init: float = 0.1
    layer_norm_eps: float = pydantic.Field(default=1e-5, gt=0)


class AnchorConfig(StrictConfig):
    """T_seg = min(max_seg_frames, #VLM frames) SAM2 frames (upstream seg_image_length 32); the anchors among
    them are `tdau.anchor_frames_for(T_seg)` (upstream `select_keyframes` at evaluation)."""

    max_seg_frames: int = pydantic.Field(default=32, gt=0)
    multimask_eval: bool = True  # multimask + stability selection at evaluation (SAM2's tracking rules)


class VirstConfig(StrictConfig):
    llm: QwenVLConfig
    sam2: Sam2VideoConfig = Sam2VideoConfig()
    seg: SegTokenConfig = SegTokenConfig()
    prompter: PrompterConfig = PrompterConfig()
    initial_fusion: InitialFusionConfig = InitialFusionConfig()
    anchors: AnchorConfig = AnchorConfig()

    @property
    def sam2_width(self) -> int:
        """Channels of SAM2's image embedding (what both fusions read)."""
        return self.sam2.image.vision.fpn_hidden_size

    @property
    def sam2_grid(self) -> int:
        """Side of SAM2's image embedding (image_size / 16: 64 at 1024 px)."""
        return self.sam2.image.prompt_encoder.embedding_size

    @property
    def memory_grid(self) -> int:
        """Side of the fusion memory grid after the stride-2 convs (8 upstream)."""
        return self.sam2_grid // 2 ** self.prompter.down_layers

    @pydantic.model_validator(mode="after")
    def _check(self):
        p = self.prompter
        prompt_dim = self.sam2.image.prompt_encoder.hidden_size
        if p.token_dim != prompt_dim:
            raise ValueError(f"prompter.token_dim {p.token_dim} must equal SAM2's prompt width {prompt_dim} "
                             f"(the decoded vectors replace SAM2's sparse prompt embeddings)")
        if self.sam2_grid % 2 ** p.down_layers:
            raise ValueError(f"SAM2's {self.sam2_grid}x{self.sam2_grid} image embedding does not halve "
                             f"{p.down_layers} times (prompter.down_layers)")
        if self.initial_fusion.enabled and self.llm.text.hidden_size % self.initial_fusion.num_heads:
            raise ValueError(f"initial_fusion.num_heads {self.initial_fusion.num_heads} does not divide the LLM "
                             f"width {self.llm.text.hidden_size}")
        tid = self.seg.token_id
        if tid is not None and tid >= self.llm.text.vocab_size:
            raise ValueError(f"seg.token_id {tid} is outside the LLM vocabulary ({self.llm.text.vocab_size}); "
                             f"add the token first (stvl_jax.models.virst.seg_tokens.add_seg_token)")
        return self


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_preset(section, name: str, where: str):
    """`{"preset": NAME_OR_PATH, **overrides}` -> the preset's mapping with the overrides merged in (so a VIRST
    config reuses configs/models/qwen3vl_tiny.yaml and sam2_tiny.yaml instead of copying them)."""
    from stvl_jax import packaged
    from stvl_jax.config_base import load_yaml
    from stvl_jax.errors import ConfigError

    if not isinstance(section, dict) or "preset" not in section:
        return section
    preset = section["preset"]
    if not isinstance(preset, str):
        raise ConfigError(f"{where}: {name}.preset must be a preset name or a YAML path, got {preset!r}")
    rest = {k: v for k, v in section.items() if k != "preset"}
    return _deep_merge(load_yaml(packaged.resolve_config(preset, "models")), rest)


def load_virst_config(name_or_path: str, overrides=()) -> VirstConfig:
    """A preset name (configs/models, e.g. `virst_tiny`) or a YAML path -> VirstConfig. `llm` and `sam2` may be
    given as `{preset: NAME, ...overrides}`."""
    from stvl_jax import packaged
    from stvl_jax.config_base import apply_overrides, load_yaml

    path = packaged.resolve_config(name_or_path, "models")
    data = load_yaml(path)
    for name in ("llm", "sam2"):
        if name in data:
            data[name] = _resolve_preset(data[name], name, str(path))
    return VirstConfig.from_dict(apply_overrides(data, overrides), source=str(path))
