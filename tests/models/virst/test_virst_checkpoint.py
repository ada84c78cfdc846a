"""VIRST checkpoints: save_model -> load_model (through the family dispatch) gives back every parameter, the
config and both preprocessings; a checkpoint whose parameters do not fit its config is refused."""

import json

import numpy as np
import pytest
from flax import nnx
from virst_helpers import tiny_config

import stvl_jax
from stvl_jax.errors import CheckpointError
from stvl_jax.models.virst.model import VirstModel
from stvl_jax.nn.params import flat_params


@pytest.mark.slow  # eager construction of the tiny Qwen3-VL + SAM2 + Orbax IO (~1 min on 2 shared cores)
def test_roundtrip_and_refusal(tmp_path):
    cfg = tiny_config(initial_fusion={"enabled": True, "num_heads": 4})
    model = VirstModel(cfg, rngs=nnx.Rngs(3))
    path = stvl_jax.save_model(model, None, tmp_path / "ckpt")
    loaded = stvl_jax.load_model(path)
    assert type(loaded) is VirstModel and loaded.config == cfg
    assert loaded.sam2_preprocessing.image_size == 128 and loaded.llm.preprocessing == model.llm.preprocessing
    want = flat_params(model)
    got = flat_params(loaded)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k].get_value()), np.asarray(want[k].get_value()))
    info = json.loads((path / "stvl_config.json").read_text())
    assert info["format"] == "stvl-jax/virst"
    info["model"]["prompter"]["ffn_dim"] = 512  # the stored ffn weights no longer fit
    (path / "stvl_config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match=r"ff/fc1/(kernel|bias).*has shape"):
        stvl_jax.load_model(path)
