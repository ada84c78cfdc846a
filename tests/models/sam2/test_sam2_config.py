"""SAM2 config: HF config.json -> Sam2Config -> HF round trip, defaults equal to transformers', strictness."""

import pytest

from stvl_jax.errors import ConfigError
from stvl_jax.models.sam2.config import Sam2Config, from_hf, to_hf

transformers = pytest.importorskip("transformers")


def test_defaults_match_transformers():
    hf = transformers.Sam2Config().to_dict()
    assert from_hf(hf) == Sam2Config()


@pytest.mark.parametrize("shape", ["a", "b"])
def test_round_trip_through_transformers(shape):
    from sam2_helpers import hf_config

    ours = from_hf(hf_config(shape).to_dict())
    back = transformers.Sam2Config(**to_hf(ours))
    assert from_hf(back.to_dict()) == ours
    assert ours.vision.backbone.blocks_per_stage == tuple(hf_config(shape).vision_config.backbone_config
                                                         .blocks_per_stage)


def test_unknown_and_wrong_keys_are_refused():
    hf = transformers.Sam2Config().to_dict()
    with pytest.raises(ConfigError, match="num_maskmem"):
        from_hf({**hf, "num_maskmem": 7})
    bad = {**hf, "mask_decoder_config": {**hf["mask_decoder_config"], "num_heads": 8}}
    with pytest.raises(ConfigError, match="num_heads"):
        from_hf(bad)
    with pytest.raises(ConfigError, match="model_type"):
        from_hf({**hf, "model_type": "sam"})


def test_video_config_image_part():
    hf = transformers.Sam2VideoConfig().to_dict()
    assert from_hf(hf) == Sam2Config()


def test_global_block_that_pools_is_refused():
    hf = transformers.Sam2Config().to_dict()
    backbone = {**hf["vision_config"]["backbone_config"], "global_attention_blocks": [1]}
    with pytest.raises(ConfigError, match="global"):
        from_hf({**hf, "vision_config": {**hf["vision_config"], "backbone_config": backbone}})


@pytest.mark.torch
def test_image_key_map_is_the_image_part_of_sam2_video_model():
    """Every image-path tensor of the key map exists with the same shape in transformers' `Sam2VideoModel` (the
    video checkpoint's image part loads through the same table)."""
    pytest.importorskip("torch")
    from sam2_helpers import hf_config, our_config

    from converters.sam2_keys import key_map

    image = hf_config("b").to_dict()
    video = transformers.Sam2VideoConfig(
        vision_config=hf_config("b").vision_config, prompt_encoder_config=image["prompt_encoder_config"],
        mask_decoder_config=image["mask_decoder_config"], image_size=64, memory_attention_hidden_size=48,
        memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=32, memory_encoder_hidden_size=48,
        mask_downsampler_embed_dim=48, memory_fuser_embed_dim=48, memory_fuser_intermediate_dim=64,
        memory_encoder_output_channels=16)
    assert from_hf(video.to_dict()) == our_config("b")
    shapes = {k: tuple(v.shape) for k, v in transformers.Sam2VideoModel(video).state_dict().items()}
    entries = key_map(our_config("b"))
    assert {e.hf: e.hf_shape for e in entries} == {e.hf: shapes[e.hf] for e in entries}
    assert not [k for k in shapes if k.startswith(("vision_encoder.", "prompt_encoder.", "mask_decoder."))
                and k not in {e.hf for e in entries}]


def test_transformers_4_generic_keys_are_ignored():
    """Hub config.json files written by transformers 4.x carry generation/tokenizer defaults in every section."""
    legacy = dict(use_bfloat16=False, num_beams=1, top_k=50, pruned_heads={}, torchscript=False, bos_token_id=None)
    hf = transformers.Sam2Config().to_dict()
    vision = {**hf["vision_config"], **legacy,
              "backbone_config": {**hf["vision_config"]["backbone_config"], **legacy}}
    old = {**hf, **legacy, "vision_config": vision, "mask_decoder_config": {**hf["mask_decoder_config"], **legacy}}
    assert from_hf(old) == Sam2Config()
