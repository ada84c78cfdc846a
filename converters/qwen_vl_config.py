"""HF `config.json` <-> `QwenVLConfig`.

Reads the transformers-5 layout (nested `text_config` / `vision_config`, `rope_parameters`) and the older hub
layouts (Qwen2.5-VL's flat text fields, `rope_scaling` + `rope_theta`). Writes the transformers-5 layout, which
`from_pretrained` loads.
"""

from __future__ import annotations

from typing import Any

from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig

FAMILY_OF_MODEL_TYPE = {"qwen3_vl": "qwen3_vl", "qwen2_5_vl": "qwen2_5_vl"}
ARCHITECTURES = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}
_TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "rms_norm_eps", "max_position_embeddings", "rope_parameters",
              "rope_scaling", "rope_theta", "head_dim", "attention_bias", "tie_word_embeddings")


def _rope(text: dict[str, Any]) -> tuple[float, list[int], bool]:
    rope = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
    theta = rope.get("rope_theta", text.get("rope_theta"))
    if theta is None:
        raise CheckpointError("config.json has no rope_theta (text_config.rope_parameters.rope_theta)")
    section = rope.get("mrope_section")
    if section is None:
        raise CheckpointError("config.json has no mrope_section (text_config.rope_parameters.mrope_section)")
    return float(theta), list(section), bool(rope.get("mrope_interleaved", False))


def from_hf_dict(d: dict[str, Any]) -> QwenVLConfig:
    model_type = d.get("model_type")
    if model_type not in FAMILY_OF_MODEL_TYPE:
        raise CheckpointError(f"config.json model_type {model_type!r} is not a supported Qwen-VL "
                              f"({sorted(FAMILY_OF_MODEL_TYPE)})")
    family = FAMILY_OF_MODEL_TYPE[model_type]
    text = dict(d.get("text_config") or {})
    for k in _TEXT_KEYS:  # flat (Qwen2.5-VL hub) layout
        if k in d and k not in text:
            text[k] = d[k]
    vis = dict(d.get("vision_config") or {})
    theta, section, interleaved = _rope(text)
    heads = text["num_attention_heads"]
    head_dim = text.get("head_dim") or text["hidden_size"] // heads
    qwen3 = family == "qwen3_vl"
    eos = d.get("eos_token_id", text.get("eos_token_id"))
    tie = d.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    try:
        tc = TextConfig(
            vocab_size=text["vocab_size"], hidden_size=text["hidden_size"],
            intermediate_size=text["intermediate_size"], num_hidden_layers=text["num_hidden_layers"],
            num_attention_heads=heads, num_key_value_heads=text.get("num_key_value_heads") or heads,
            head_dim=head_dim, hidden_act=text.get("hidden_act", "silu"),
            rms_norm_eps=text.get("rms_norm_eps", 1e-6), rope_theta=theta, mrope_section=tuple(section),
            mrope_interleaved=interleaved, attention_bias=(text.get("attention_bias", False) if qwen3 else True),
            qk_norm=qwen3, max_position_embeddings=text.get("max_position_embeddings", 128000),
            initializer_range=text.get("initializer_range", 0.02),
        )
        vc = VisionConfig(
            depth=vis["depth"], hidden_size=vis["hidden_size"], intermediate_size=vis["intermediate_size"],
            num_heads=vis["num_heads"], out_hidden_size=vis.get("out_hidden_size", text["hidden_size"]),
            in_channels=vis.get("in_channels", vis.get("in_chans", 3)), patch_size=vis.get("patch_size", 16),
            temporal_patch_size=vis.get("temporal_patch_size", 2),
            spatial_merge_size=vis.get("spatial_merge_size", 2),
            hidden_act=vis.get("hidden_act", "gelu_pytorch_tanh" if qwen3 else "silu"),
            rope_theta=float((vis.get("rope_parameters") or {}).get("rope_theta", 10000.0)),
            num_position_embeddings=vis.get("num_position_embeddings") if qwen3 else None,
            deepstack_visual_indexes=tuple(vis.get("deepstack_visual_indexes", ())) if qwen3 else (),
            window_size=None if qwen3 else vis.get("window_size", 112),
            fullatt_block_indexes=() if qwen3 else tuple(vis.get("fullatt_block_indexes", ())),
            tokens_per_second=None if qwen3 else vis.get("tokens_per_second", 4),
            initializer_range=vis.get("initializer_range", 0.02),
        )
        return QwenVLConfig(
            family=family, vision=vc, text=tc,
            image_token_id=d.get("image_token_id", 151655), video_token_id=d.get("video_token_id", 151656),
            vision_start_token_id=d.get("vision_start_token_id", 151652),
            vision_end_token_id=d.get("vision_end_token_id", 151653),
            tie_word_embeddings=bool(tie),
            eos_token_id=tuple(eos if isinstance(eos, list) else [] if eos is None else [eos]),
            pad_token_id=d.get("pad_token_id", text.get("pad_token_id")),
            architecture=(d.get("architectures") or [""])[0],
        )
    except KeyError as e:
        raise CheckpointError(f"config.json lacks required field {e.args[0]!r}") from None
    except ValueError as e:
        raise CheckpointError(f"config.json is inconsistent: {e}") from None


def to_hf_dict(config: QwenVLConfig, *, torch_dtype: str | None = None) -> dict[str, Any]:
    tc, vc = config.text, config.vision
    qwen3 = config.family == "qwen3_vl"
    rope = {"rope_type": "default", "rope_theta": tc.rope_theta, "mrope_section": list(tc.mrope_section)}
    if qwen3:
        rope["mrope_interleaved"] = tc.mrope_interleaved
    text = dict(
        model_type=f"{config.family}_text", vocab_size=tc.vocab_size, hidden_size=tc.hidden_size,
        intermediate_size=tc.intermediate_size, num_hidden_layers=tc.num_hidden_layers,
        num_attention_heads=tc.num_attention_heads, num_key_value_heads=tc.num_key_value_heads,
        hidden_act=tc.hidden_act, rms_norm_eps=tc.rms_norm_eps,
        max_position_embeddings=tc.max_position_embeddings, rope_parameters=rope,
        tie_word_embeddings=config.tie_word_embeddings, initializer_range=tc.initializer_range,
    )
    if qwen3:
        text.update(head_dim=tc.head_dim, attention_bias=tc.attention_bias)
    vision = dict(
        model_type=f"{config.family}_vision", depth=vc.depth,
        hidden_size=vc.hidden_size, intermediate_size=vc.intermediate_size, num_heads=vc.num_heads,
        out_hidden_size=vc.out_hidden_size, in_channels=vc.in_channels, patch_size=vc.patch_size,
        temporal_patch_size=vc.temporal_patch_size, spatial_merge_size=vc.spatial_merge_size,
        hidden_act=vc.hidden_act, initializer_range=vc.initializer_range,
    )
    if qwen3:
        vision.update(num_position_embeddings=vc.num_position_embeddings,
                      deepstack_visual_indexes=list(vc.deepstack_visual_indexes))
    else:
        tps = vc.tokens_per_second  # transformers 5.23 validates it as an int
        vision.update(window_size=vc.window_size, fullatt_block_indexes=list(vc.fullatt_block_indexes),
                      tokens_per_second=int(tps) if tps is not None and float(tps).is_integer() else tps)
    if vc.rope_theta != 10000.0:
        vision["rope_parameters"] = {"rope_type": "axial", "rope_theta": vc.rope_theta}
    out = dict(
        architectures=[config.architecture or ARCHITECTURES[config.family]], model_type=config.family,
        text_config=text, vision_config=vision, image_token_id=config.image_token_id,
        video_token_id=config.video_token_id, vision_start_token_id=config.vision_start_token_id,
        vision_end_token_id=config.vision_end_token_id, tie_word_embeddings=config.tie_word_embeddings,
    )
    if config.eos_token_id:
        out["eos_token_id"] = list(config.eos_token_id) if len(config.eos_token_id) > 1 else config.eos_token_id[0]
    if config.pad_token_id is not None:
        out["pad_token_id"] = config.pad_token_id
    if torch_dtype:
        out["dtype"] = torch_dtype
    return out
