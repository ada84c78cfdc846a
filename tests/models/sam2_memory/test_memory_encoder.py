"""Memory encoder parity vs transformers' `Sam2VideoMemoryEncoder` (fp32, random weights, two shapes)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from flax import nnx  # noqa: E402

from converters.sam2_video_keys import flat_to_hf, memory_encoder_keys  # noqa: E402
from stvl_jax.models.sam2.memory_config import MemoryEncoderConfig  # noqa: E402
from stvl_jax.models.sam2.memory_encoder import MemoryEncoder, sine_position_encoding  # noqa: E402
from stvl_jax.nn.params import flat_params  # noqa: E402
from sam2_memory_helpers import SHAPES, build_loaded, jitted, state_numpy, tiny_hf_config, tiny_hf_model  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module", params=[(s, scan) for s in sorted(SHAPES) for scan in (True, False)],
                ids=lambda p: f"{p[0]}-{'scan' if p[1] else 'unrolled'}")
def pair(request):
    shape, scan = request.param  # both layer loops: lax.scan and unrolled (`scan_layers`)
    hf_cfg = tiny_hf_config(shape)
    hf = tiny_hf_model(hf_cfg, seed=1).memory_encoder
    cfg = MemoryEncoderConfig.from_hf(hf_cfg.to_dict())
    ours = build_loaded(lambda: MemoryEncoder(cfg, scan_layers=scan, rngs=nnx.Rngs(0)),
                        memory_encoder_keys(cfg, "", ""),
                        state_numpy(hf))
    return shape, cfg, hf, ours


def test_forward_matches_transformers(pair):
    shape, cfg, hf, ours = pair
    h, w = SHAPES[shape]["grid"]
    s = cfg.downsampler_total_stride
    rng = np.random.default_rng(0)
    pix = rng.normal(size=(2, cfg.hidden_size, h, w)).astype(np.float32)
    # the tracker feeds sigmoid(logits) * 20 - 10 (or binarised masks); both kinds of values
    masks = rng.normal(size=(2, 1, h * s, w * s)).astype(np.float32) * 8
    masks[1] = np.where(masks[1] > 0, 10.0, -10.0)
    with torch.no_grad():
        ref_feat, ref_pos = (t.numpy() for t in hf(torch.from_numpy(pix), torch.from_numpy(masks)))
    feat, pos = jitted(ours)(pix.transpose(0, 2, 3, 1), masks[:, 0])
    feat, pos = np.asarray(feat).transpose(0, 3, 1, 2), np.asarray(pos).transpose(0, 3, 1, 2)
    assert feat.shape == ref_feat.shape and pos.shape == ref_pos.shape
    assert np.abs(ref_feat).max() > 1.0  # the comparison is not of near-zero outputs
    np.testing.assert_allclose(feat, ref_feat, atol=TOL, rtol=0)
    np.testing.assert_allclose(pos, ref_pos, atol=1e-5, rtol=0)


def test_key_map_round_trip(pair):
    """Export through the key map gives HF's state dict back bit for bit, and covers all of it."""
    _, cfg, hf, ours = pair
    ref = state_numpy(hf)
    params = {k: np.asarray(v.get_value()) for k, v in flat_params(ours).items()}
    back = flat_to_hf(memory_encoder_keys(cfg, "", ""), params.__getitem__)
    assert sorted(back) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k], err_msg=k)


def test_sine_table_matches_meta():
    """The position table against Meta's `PositionEmbeddingSine` (the second reference)."""
    pe_mod = pytest.importorskip("sam2.modeling.position_encoding")
    meta = pe_mod.PositionEmbeddingSine(num_pos_feats=64, normalize=True)
    with torch.no_grad():
        ref = meta(torch.zeros(1, 64, 5, 7)).numpy()[0].transpose(1, 2, 0)
    np.testing.assert_allclose(sine_position_encoding(5, 7, 64), ref, atol=1e-6, rtol=0)


def test_bad_mask_grid_is_one_clear_error(pair):
    _, cfg, _, ours = pair
    s = cfg.downsampler_total_stride
    with pytest.raises(ValueError, match="does not match the pixel features"):
        jitted(ours)(np.zeros((1, 4, 4, cfg.hidden_size), np.float32), np.zeros((1, 5 * s, 4 * s), np.float32))


def test_every_parameter_has_rule_backed_logical_axes():
    from stvl_jax.sharding import logical_axes_of, logical_to_spec

    cfg = MemoryEncoderConfig(hidden_size=32, downsampler_embed_dim=32, fuser_embed_dim=32)
    abstract = nnx.eval_shape(lambda: MemoryEncoder(cfg, rngs=nnx.Rngs(0)))
    for path, var in flat_params(abstract).items():
        axes = logical_axes_of(var)
        assert all(a is not None for a in axes), path
        logical_to_spec(axes)  # raises on a name without a rule or two names on one mesh axis
