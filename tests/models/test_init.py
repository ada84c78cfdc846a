"""Fresh weights are drawn as transformers draws them: N(0, initializer_range^2) for every kernel, embedding and
position table, with the text tower's range for the LLM (and the untied head) and the vision tower's for the ViT
and mergers; biases 0, norm scales 1. The range survives the HF config round trip."""

import numpy as np
import pytest

from qwen_vl_helpers import tiny_hf_config

TEXT_STD, VISION_STD = 0.2, 0.05


def _hf_config(family: str, tie: bool):
    return tiny_hf_config(family, tie=tie, text=dict(initializer_range=TEXT_STD),
                          vision=dict(initializer_range=VISION_STD))


@pytest.mark.parametrize("family,tie", [("qwen3_vl", True), ("qwen2_5_vl", False)])
def test_fresh_weights_follow_each_towers_initializer_range(family, tie):
    from flax import nnx

    from converters.qwen_vl_config import from_hf_dict
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration

    config = from_hf_dict(_hf_config(family, tie).to_dict())
    assert (config.text.initializer_range, config.vision.initializer_range) == (TEXT_STD, VISION_STD)
    model = QwenVLForConditionalGeneration(config, rngs=nnx.Rngs(0))
    seen = set()
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, x = "/".join(map(str, path)), np.asarray(var.get_value())
        if key.endswith("/bias"):
            assert not x.any(), key
        elif "norm" in key:
            assert (x == 1).all(), key
        else:
            want = VISION_STD if key.startswith("visual/") else TEXT_STD
            assert abs(x.mean()) < 0.1 * want and abs(x.std() / want - 1) < 0.1, (key, x.std(), want)
            seen.add(key.split("/")[0])
    assert seen == {"visual", "language_model"} | (set() if tie else {"lm_head"})


def test_initializer_range_round_trips_through_the_hf_config():
    from converters.qwen_vl_config import from_hf_dict, to_hf_dict

    config = from_hf_dict(_hf_config("qwen2_5_vl", True).to_dict())
    out = to_hf_dict(config)
    assert (out["text_config"]["initializer_range"], out["vision_config"]["initializer_range"]) == (TEXT_STD,
                                                                                                  VISION_STD)
    back = from_hf_dict(out)
    assert (back.text, back.vision) == (config.text, config.vision)
    # a config.json without the field (older exports, hand-written files) gets HF's default
    del out["text_config"]["initializer_range"], out["vision_config"]["initializer_range"]
    assert from_hf_dict(out).text.initializer_range == from_hf_dict(out).vision.initializer_range == 0.02
