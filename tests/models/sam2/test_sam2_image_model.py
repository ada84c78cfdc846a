"""The composed SAM2 image model vs transformers' `Sam2Model` (eval, fp32), weights moved through
`converters.sam2_keys`: low-res mask logits, IoU scores and object-score logits within 1e-4, for two shapes and
every prompt kind (points with labels and padding, boxes, points + boxes, mask prompts of another size, no
prompt), multimask on and off (off = the dynamic stability fallback), image embeddings reused; the dynamic
fallback rule itself on logits built to hit both branches; the key map's export is the HF state dict."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sam2_helpers import IMAGE, SHAPES, flax_part, hf_state, our_config, t2n, torch_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

TOL = 1e-4


def inputs(seed, b=2, p=2, n=3):
    rng = np.random.default_rng(seed)
    x0y0 = rng.uniform(0, IMAGE / 2, (b, p, 2))
    return dict(
        pixel_values=rng.normal(size=(b, 3, IMAGE, IMAGE)).astype(np.float32),
        input_points=rng.uniform(0, IMAGE, (b, p, n, 2)).astype(np.float32),
        input_labels=np.concatenate([np.ones((b, p, 1)), rng.choice([1, 0, -10], (b, p, n - 1))], -1
                                    ).astype(np.int64),
        input_boxes=np.concatenate([x0y0, x0y0 + rng.uniform(4, IMAGE / 2, (b, p, 2))], -1).astype(np.float32),
        input_masks=(rng.normal(size=(b, 1, 40, 40)) * 4).astype(np.float32),
    )


# case -> (inputs used, multimask_output)
CASES = {
    "points-multimask": (("input_points", "input_labels"), True),
    "points-single": (("input_points", "input_labels"), False),
    "box-mask-single": (("input_boxes", "input_masks"), False),
    "points-box-multimask": (("input_points", "input_labels", "input_boxes"), True),
    "no-prompt": ((), True),
}


@functools.lru_cache(maxsize=None)
def embeddings(shape, seed=0):
    """Our image embeddings of `inputs(seed)` (the encoder compiled once per shape)."""
    pixels = jnp.asarray(inputs(seed)["pixel_values"])
    return nnx.jit(lambda m, x: m.get_image_embeddings(x))(flax_part(shape), pixels)


@nnx.jit(static_argnames="multimask")
def decode(m, emb, prompts, multimask):
    return m(image_embeddings=emb, **prompts, multimask_output=multimask)


def run_both(shape, case, seed=0, from_pixels=False):
    """transformers from pixels vs ours from pixels (`from_pixels`) or from our cached image embeddings."""
    keys, multimask = CASES[case]
    data = inputs(seed)
    prompts = {k: v for k, v in data.items() if k in keys}
    with torch.no_grad():
        ref = torch_model(shape)(pixel_values=torch.from_numpy(data["pixel_values"]),
                                 **{k: torch.from_numpy(v) for k, v in prompts.items()}, multimask_output=multimask)
    prompts = {k: jnp.asarray(v) for k, v in prompts.items()}
    if from_pixels:
        out = nnx.jit(lambda m, x, p: m(pixel_values=x, **p, multimask_output=multimask))(
            flax_part(shape), jnp.asarray(data["pixel_values"]), prompts)
    else:
        out = decode(flax_part(shape), embeddings(shape, seed), prompts, multimask)
    return ref, out


def assert_same(ref, out):
    for name in ("pred_masks", "iou_scores", "object_score_logits"):
        theirs, mine = t2n(getattr(ref, name)), np.asarray(getattr(out, name))
        assert mine.shape == theirs.shape, name
        np.testing.assert_allclose(mine, theirs, atol=TOL, rtol=0, err_msg=name)


# every case on both shapes; the default run covers each case once (each distinct prompt structure is a compile).
# The dynamic fallback: a-points-single falls back for every prompt set, b-box-mask-single for half of them.
FAST = {("a", "points-multimask"), ("a", "points-single"), ("b", "box-mask-single"), ("b", "points-box-multimask"),
        ("b", "no-prompt")}
PAIRS = [pytest.param(s, c, marks=() if (s, c) in FAST else pytest.mark.slow) for s in sorted(SHAPES) for c in CASES]


@pytest.mark.parametrize("shape, case", PAIRS)
def test_image_model_matches_transformers(shape, case):
    ref, out = run_both(shape, case)
    assert_same(ref, out)
    masks = np.asarray(out.pred_masks)
    side = IMAGE // 4
    k = 1 if not CASES[case][1] else our_config(shape).mask_decoder.num_multimask_outputs
    assert masks.shape[2:] == (k, side, side)
    assert masks.std() > 1e-2  # logits that vary: the comparison is not of constants


def test_composed_model_from_pixels_matches_transformers():
    ref, out = run_both("b", "box-mask-single", seed=1, from_pixels=True)
    assert_same(ref, out)


def test_image_embeddings_match_transformers():
    shape = "a"
    with torch.no_grad():
        t_emb = torch_model(shape).get_image_embeddings(torch.from_numpy(inputs(0)["pixel_values"]))
    for mine, theirs in zip(embeddings(shape), t_emb):
        np.testing.assert_allclose(np.moveaxis(np.asarray(mine), -1, 1), t2n(theirs), atol=TOL, rtol=0)


def test_dynamic_multimask_rule_matches_transformers():
    from stvl_jax.models.sam2.mask_decoder import dynamic_multimask

    rng = np.random.default_rng(0)
    n, m, h = 6, 4, 8
    logits = rng.normal(size=(1, n, m, h, h)).astype(np.float32) * 3
    logits[0, :3, 0] = np.sign(logits[0, :3, 0]) * 5  # far from +-delta: stable single masks
    logits[0, 3, 0] = 0.0  # empty union: stability 1 by definition
    iou = rng.uniform(size=(1, n, m)).astype(np.float32)
    dec = torch_model("a").mask_decoder
    ref_masks, ref_iou = dec._dynamic_multimask_via_stability(torch.from_numpy(logits), torch.from_numpy(iou))
    masks, scores = dynamic_multimask(jnp.asarray(logits[0]), jnp.asarray(iou[0]),
                                      dec.dynamic_multimask_stability_delta, dec.dynamic_multimask_stability_thresh)
    np.testing.assert_array_equal(np.asarray(masks), t2n(ref_masks)[0])
    np.testing.assert_array_equal(np.asarray(scores), t2n(ref_iou)[0])
    fell_back = ~np.all(np.asarray(masks)[:, 0] == logits[0, :, 0], axis=(-2, -1))
    assert fell_back.any() and not fell_back.all()


def test_export_is_the_hf_state_dict():
    from converters.sam2_keys import model_to_hf

    ref = hf_state(torch_model("b"))
    exported = model_to_hf(flax_part("b"), our_config("b"))
    assert set(exported) == set(ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(exported[k], v, err_msg=k)


def test_training_mode_skips_the_dynamic_fallback():
    """In training the single-mask output is always token 0 (the reference's `not self.training` branch); on
    these inputs inference falls back to multimask outputs, so the two differ."""
    shape = "a"
    data = inputs(0)
    given = {k: torch.from_numpy(data[k]) for k in ("pixel_values", "input_points", "input_labels")}
    tm = torch_model(shape)
    with torch.no_grad():
        ref_eval = tm(**given, multimask_output=False)
        tm.train()
        try:
            ref = tm(**given, multimask_output=False)
        finally:
            tm.eval()
    assert np.abs(t2n(ref.pred_masks) - t2n(ref_eval.pred_masks)).max() > 1.0
    prompts = {k: jnp.asarray(data[k]) for k in ("input_points", "input_labels")}
    out = nnx.jit(lambda m, e, p: m(image_embeddings=e, **p, multimask_output=False, training=True))(
        flax_part(shape), embeddings(shape), prompts)
    assert_same(ref, out)
