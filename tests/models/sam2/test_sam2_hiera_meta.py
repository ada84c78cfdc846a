"""The Hiera trunk vs Meta's `sam2` package (`sam2.modeling.backbones.hieradet.Hiera`, the second reference),
random weights renamed by `converters.sam2_keys.meta_trunk_to_hf`: every stage map within 1e-4 fp32, with all
stages pooled and with fewer query-pool stages than stage changes (the last stage widens without pooling)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
hieradet = pytest.importorskip("sam2.modeling.backbones.hieradet")
pytestmark = pytest.mark.torch

TOL = 1e-4
META = {
    "q_pool3": dict(embed_dim=8, num_heads=1, q_pool=3, stages=(1, 2, 3, 1), window_spec=(4, 4, 2, 1),
                    global_att_blocks=(4,), window_pos_embed_bkg_spatial_size=(4, 4)),
    "q_pool2": dict(embed_dim=8, num_heads=1, q_pool=2, stages=(2, 1, 2, 2), window_spec=(2, 2, 3, 3),
                    global_att_blocks=(1, 6), window_pos_embed_bkg_spatial_size=(3, 5)),
}


def our_hiera_config(kw):
    from stvl_jax.models.sam2.config import HieraConfig

    n = len(kw["stages"])
    return HieraConfig(hidden_size=kw["embed_dim"], blocks_per_stage=kw["stages"],
                       embed_dim_per_stage=[kw["embed_dim"] * 2 ** s for s in range(n)],
                       num_attention_heads_per_stage=[kw["num_heads"] * 2 ** s for s in range(n)],
                       window_size_per_stage=kw["window_spec"], global_attention_blocks=kw["global_att_blocks"],
                       num_query_pool_stages=kw["q_pool"],
                       window_positional_embedding_background_size=kw["window_pos_embed_bkg_spatial_size"])


@pytest.mark.parametrize("name", sorted(META))
def test_hiera_matches_meta_sam2(name):
    from converters.sam2_keys import build_from_hf_state, meta_trunk_to_hf
    from stvl_jax.models.sam2.config import Sam2Config, VisionConfig
    from stvl_jax.models.sam2.hiera import Hiera

    torch.manual_seed(0)
    meta = hieradet.Hiera(**META[name]).eval()
    with torch.no_grad():
        for k, t in meta.state_dict().items():
            t.copy_(torch.randn(t.shape) * 0.2 + (1.0 if "norm" in k and k.endswith("weight") else 0.0))
    hc = our_hiera_config(META[name])
    cfg = Sam2Config(vision=VisionConfig(backbone=hc, backbone_channel_list=tuple(reversed(hc.embed_dim_per_stage)),
                                         fpn_hidden_size=32), prompt_encoder=dict(hidden_size=32),
                     mask_decoder=dict(hidden_size=32, num_attention_heads=2))
    state = {meta_trunk_to_hf("image_encoder.trunk." + k): v.numpy() for k, v in meta.state_dict().items()}
    ours = build_from_hf_state(lambda: Hiera(hc, rngs=nnx.Rngs(0)), cfg, state, prefix="vision_encoder/backbone/")
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = meta(torch.from_numpy(x))
    out = nnx.jit(lambda m, p: m(p))(ours, jnp.asarray(np.moveaxis(x, 1, -1)))
    assert len(out) == len(ref) == 4
    for mine, theirs in zip(out, ref):
        theirs = theirs.numpy()
        assert np.moveaxis(np.asarray(mine), -1, 1).shape == theirs.shape
        np.testing.assert_allclose(np.moveaxis(np.asarray(mine), -1, 1), theirs, atol=TOL, rtol=0)
    assert float(np.abs(np.asarray(out[-1])).mean()) > 1e-2
