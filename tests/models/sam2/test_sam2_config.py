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
