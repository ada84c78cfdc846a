"""SAM2 prompt encoder vs transformers' `Sam2PromptEncoder` (fp32, two shapes): points with every label kind
(1, 0, -1 not-a-point, -10 padding), boxes, points + boxes, mask prompts, no prompt; the antialiased mask resize
vs `F.interpolate(antialias=True)`."""


import jax.numpy as jnp
import numpy as np
import pytest

from sam2_helpers import IMAGE, SHAPES, flax_part, nchw, t2n, torch_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOL = 1e-4


def prompts(seed, b=2, p=3, n=4):
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, IMAGE, (b, p, n, 2)).astype(np.float32)
    labels = rng.choice([1, 0, -1, -10], (b, p, n)).astype(np.int64)
    labels[..., 0] = 1
    x0y0 = rng.uniform(0, IMAGE / 2, (b, p, 2))
    boxes = np.concatenate([x0y0, x0y0 + rng.uniform(1, IMAGE / 2, (b, p, 2))], -1).astype(np.float32)
    masks = rng.normal(size=(b, 1, IMAGE // 4, IMAGE // 4)).astype(np.float32) * 3
    return points, labels, boxes, masks


CASES = {"points": ("points", "labels"), "boxes": ("boxes",), "points+boxes": ("points", "labels", "boxes"),
         "mask": ("boxes", "masks"), "points+mask": ("points", "labels", "masks")}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_prompt_encoder_matches_transformers(shape, case):
    points, labels, boxes, masks = prompts(sorted(CASES).index(case))
    given = dict(points=points, labels=labels, boxes=boxes, masks=masks)
    given = {k: (v if k in CASES[case] else None) for k, v in given.items()}
    t = {k: None if v is None else torch.from_numpy(v) for k, v in given.items()}
    with torch.no_grad():
        sparse, dense = torch_model(shape).prompt_encoder(t["points"], t["labels"], t["boxes"], t["masks"])
    j = {k: None if v is None else jnp.asarray(v) for k, v in given.items()}
    encoder = flax_part(shape, "prompt_encoder")
    o_sparse, o_dense = encoder(j["points"], j["labels"], j["boxes"], j["masks"], batch_size=2)
    assert o_sparse.shape == tuple(sparse.shape)
    np.testing.assert_allclose(np.asarray(o_sparse), t2n(sparse), atol=TOL, rtol=0)
    np.testing.assert_allclose(nchw(o_dense), t2n(dense), atol=TOL, rtol=0)


@pytest.mark.parametrize("sizes", [(64, 16), (37, 16), (16, 16), (10, 16), (100, 7)])
def test_antialias_resize_matches_torch(sizes):
    from stvl_jax.models.sam2.prompt_encoder import resize_masks

    n_in, n_out = sizes
    x = np.random.default_rng(0).normal(size=(2, 1, n_in, n_in + 3)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(n_out, n_out), mode="bilinear",
                                          align_corners=False, antialias=True)
    ours = np.asarray(resize_masks(jnp.asarray(x), n_out))
    np.testing.assert_allclose(ours, t2n(ref), atol=1e-5, rtol=0)
