"""Memory configs: read from transformers' `Sam2VideoConfig`, refuse unknown keys and inconsistent shapes."""

from __future__ import annotations

import pytest

from stvl_jax.errors import ConfigError
from stvl_jax.models.sam2.memory_config import MemoryAttentionConfig, MemoryBankConfig, MemoryEncoderConfig


def test_defaults_are_transformers_defaults():
    transformers = pytest.importorskip("transformers")
    d = transformers.Sam2VideoConfig().to_dict()
    assert MemoryEncoderConfig.from_hf(d) == MemoryEncoderConfig()
    assert MemoryAttentionConfig.from_hf(d) == MemoryAttentionConfig()
    assert MemoryBankConfig.from_hf(d) == MemoryBankConfig()


def test_reads_the_hf_fields():
    transformers = pytest.importorskip("transformers")
    d = transformers.Sam2VideoConfig(
        memory_attention_num_layers=3, memory_attention_num_attention_heads=2, memory_attention_rope_feat_sizes=[8, 6],
        rope_parameters=dict(rope_type="axial", rope_theta=500.0), memory_fuser_intermediate_dim=99,
        mask_downsampler_total_stride=4, num_maskmem=5, max_cond_frame_num=2,
        vision_config=dict(backbone_config=dict(model_type="sam2_hiera_det_model"), fpn_hidden_size=128),
        memory_attention_hidden_size=128, memory_encoder_hidden_size=128, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128).to_dict()
    att, enc, bank = (c.from_hf(d) for c in (MemoryAttentionConfig, MemoryEncoderConfig, MemoryBankConfig))
    assert (att.num_layers, att.num_heads, att.rope_feat_sizes, att.rope_theta, att.head_dim) == (3, 2, (8, 6),
                                                                                                  500.0, 64)
    assert (enc.fuser_intermediate_dim, enc.num_downsampler_layers, enc.hidden_size) == (99, 2, 128)
    assert (bank.num_maskmem, bank.max_cond_frame_num, bank.hidden_dim, bank.pointer_splits) == (5, 2, 128, 2)


def test_unknown_key_refused():
    with pytest.raises(ConfigError, match="unknown key 'num_head'"):
        MemoryAttentionConfig.from_dict({"num_head": 2})


@pytest.mark.parametrize("cls, data, match", [
    (MemoryEncoderConfig, {"fuser_embed_dim": 128}, "must be equal"),
    (MemoryEncoderConfig, {"downsampler_total_stride": 1}, "power"),
    (MemoryAttentionConfig, {"hidden_size": 30, "num_heads": 3}, "multiple of 4"),
    (MemoryAttentionConfig, {"num_heads": 3}, "multiple of num_heads"),
    (MemoryBankConfig, {"mem_dim": 48}, "multiple of mem_dim"),
    (MemoryAttentionConfig, {"ffn_act": "swish"}, "ffn_act 'swish' is not a known activation"),
    (MemoryBankConfig, {"max_cond_frame_num": 0}, "max_cond_frame_num"),
])
def test_inconsistent_shapes_refused(cls, data, match):
    with pytest.raises(ConfigError, match=match):
        cls.from_dict(data)


def test_other_model_type_refused():
    with pytest.raises(ConfigError, match="model_type 'sam2' has no video memory"):
        MemoryBankConfig.from_hf({"model_type": "sam2"})
    with pytest.raises(ConfigError, match="rope_type 'default'"):
        MemoryAttentionConfig.from_hf({"rope_parameters": {"rope_type": "default"}})
