"""SAM2 vision encoder (Hiera trunk + FPN neck) vs transformers' `Sam2VisionModel` (fp32, two shapes): every
stage map, every FPN level and its sine position encoding; the bicubic position resize vs `F.interpolate`."""


import jax
import numpy as np
import pytest
from flax import nnx

from sam2_helpers import IMAGE, SHAPES, flax_part, nchw, t2n, torch_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOL = 1e-4


def pixels(seed, batch=2):
    return np.random.default_rng(seed).normal(size=(batch, 3, IMAGE, IMAGE)).astype(np.float32)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_vision_encoder_matches_transformers(shape):
    tm = torch_model(shape)
    x = pixels(1)
    with torch.no_grad():
        ref = tm.vision_encoder(torch.from_numpy(x), output_hidden_states=True)
        stages = tm.vision_encoder.backbone(torch.from_numpy(x)).intermediate_hidden_states
    encoder = flax_part(shape, "vision_encoder")
    levels, pos, last = nnx.jit(lambda m, p: m(p))(encoder, jax.numpy.asarray(np.moveaxis(x, 1, -1)))
    assert len(levels) == len(ref.fpn_hidden_states) == 3
    for ours, theirs in zip(levels, ref.fpn_hidden_states):
        assert nchw(ours).shape == tuple(theirs.shape)
        np.testing.assert_allclose(nchw(ours), t2n(theirs), atol=TOL, rtol=0)
    for ours, theirs in zip(pos, ref.fpn_position_encoding):
        np.testing.assert_allclose(nchw(ours), t2n(theirs), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(last), t2n(stages[-1]), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(last), t2n(ref.last_hidden_state), atol=TOL, rtol=0)
    # the stage maps are not trivially small (the comparison above would pass on zeros)
    assert float(np.abs(np.asarray(levels[0])).mean()) > 1e-2


@pytest.mark.parametrize("sizes", [(4, 16), (7, 16), (3, 5), (7, 64), (5, 3), (14, 14)])
def test_bicubic_matrix_matches_torch_interpolate(sizes):
    from stvl_jax.models.sam2.hiera import bicubic_matrix

    n_in, n_out = sizes
    x = np.random.default_rng(0).normal(size=(1, 2, n_in, n_in + 1)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(n_out, n_out + 2), mode="bicubic")
    ours = np.einsum("ph,bchw,qw->bcpq", bicubic_matrix(n_in, n_out), x, bicubic_matrix(n_in + 1, n_out + 2))
    np.testing.assert_allclose(ours, t2n(ref), atol=1e-5, rtol=0)
