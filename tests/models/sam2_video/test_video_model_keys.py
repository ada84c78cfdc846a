"""Sam2VideoConfig <-> HF config.json, and the full HF `Sam2VideoModel` key map: every HF tensor is mapped,
import then export gives HF's state dict back bit for bit, and init/abstract models have the mapped params."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from converters.sam2_video_keys import video_key_map, video_model_to_hf  # noqa: E402
from stvl_jax.errors import CheckpointError, ConfigError  # noqa: E402
from stvl_jax.models.sam2.video_config import from_hf, to_hf  # noqa: E402
from stvl_jax.models.sam2.video_model import abstract_video_model, init_video_model  # noqa: E402
from stvl_jax.nn.params import flat_params  # noqa: E402
from video_helpers import (flax_video_model, hf_state, hf_video_config, our_video_config,  # noqa: E402
                           torch_video_model)


def test_config_round_trips_through_transformers():
    from transformers import Sam2VideoConfig

    cfg = our_video_config()
    assert cfg.memory_bank.num_maskmem == 3 and cfg.memory_attention.rope_feat_sizes == (4, 4)
    back = from_hf(Sam2VideoConfig(**to_hf(cfg)).to_dict())
    assert back == cfg
    # the released defaults (SAM2.1 hiera-L shapes) read too
    assert from_hf(Sam2VideoConfig().to_dict()).memory_bank.num_maskmem == 7


def test_config_refuses_unknown_and_inconsistent_keys():
    d = hf_video_config().to_dict()
    with pytest.raises(ConfigError, match="unknown key"):
        from_hf({**d, "memory_banana": 3})
    with pytest.raises(ConfigError, match="model_type"):
        from_hf({**d, "model_type": "qwen3_vl"})
    with pytest.raises(ConfigError, match="rope_feat_sizes"):
        from_hf({**d, "memory_attention_rope_feat_sizes": [8, 8]})


def test_every_hf_tensor_is_mapped_and_export_is_bit_exact():
    hf = torch_video_model()
    sd = hf_state(hf)
    cfg = our_video_config()
    names = [n for e in video_key_map(cfg) for n in e.hf_names()]
    assert len(names) == len(set(names)) and set(names) == set(sd)
    back = video_model_to_hf(flax_video_model(), cfg)
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        assert np.array_equal(back[k], v), k


def test_missing_or_misshapen_tensor_is_one_clear_error():
    from converters.sam2_video_keys import load_hf_video_state

    cfg = our_video_config()
    sd = hf_state(torch_video_model())
    with pytest.raises(CheckpointError, match="lacks 1 tensor"):
        load_hf_video_state(abstract_video_model(cfg), cfg, {k: v for k, v in sd.items() if k != "no_object_pointer"})
    bad = dict(sd, no_object_pointer=np.zeros((1, 3), np.float32))
    with pytest.raises(CheckpointError, match="no_object_pointer"):
        load_hf_video_state(abstract_video_model(cfg), cfg, bad)


def test_abstract_model_has_exactly_the_mapped_params():
    cfg = our_video_config()
    assert set(flat_params(abstract_video_model(cfg))) == {e.ours for e in video_key_map(cfg)}


@pytest.mark.slow  # one jitted init of the whole model: ~100 s of XLA compile on a loaded 2-core CPU
def test_init_model_has_exactly_the_mapped_params():
    cfg = our_video_config()
    assert set(flat_params(init_video_model(cfg, seed=1))) == {e.ours for e in video_key_map(cfg)}
