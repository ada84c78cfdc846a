"""SAM2 training's image term (`data.image_frames`): boxes on every visible frame, hand-checked, and each frame's
losses equal to those of the tracker's own first prompted frame (no memory) on the same box, the tracker being
the path checked against transformers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from stvl_jax.models.sam2.tracker import Prompt, Tracker  # noqa: E402
from stvl_jax.models.sam2.tracker_step import frame_features  # noqa: E402
from stvl_jax.train.sam2_loss import Sam2LossConfig, sam2_step_losses  # noqa: E402
from stvl_jax.train.sam2_step import image_boxes, image_term  # noqa: E402
from video_helpers import IMAGE  # noqa: E402


def test_boxes_on_every_visible_frame_in_model_pixels():
    masks = np.zeros((2, 3, 8, 10), bool)
    masks[0, 0, 2:5, 3:7] = True  # rows 2..4, columns 3..6
    masks[0, 2, 0:1, 9:10] = True  # one pixel at (x 9, y 0)
    masks[1, 1, 1:3, 1:3] = True  # a padding slot: never present
    boxes, present = image_boxes(masks, np.array([True, False]), np.random.default_rng(0),
                                 np.array([2.0, 0.5], np.float32), noise=0.0)
    assert present.tolist() == [[True, False, True], [False, False, False]]
    np.testing.assert_array_equal(boxes[0, 0], [[6.0, 1.0], [12.0, 2.0]])  # (x0 * 2, y0 / 2), (x1 * 2, y1 / 2)
    np.testing.assert_array_equal(boxes[0, 2], [[18.0, 0.0], [18.0, 0.0]])
    assert not boxes[0, 1].any() and not boxes[1].any()


@pytest.mark.slow  # ~30-60 s on 2 cores (the tracker and the image term compile)
def test_each_frame_scores_the_trackers_first_prompted_frame_output(monkeypatch):
    from video_helpers import flax_video_model

    model = flax_video_model(3)
    # training decodes mask 0 as it is (no stability fallback): the tracker must too, for the comparison
    dec = model.image.mask_decoder
    monkeypatch.setattr(dec, "config", dec.config.model_copy(update={"dynamic_multimask_via_stability": False}))
    t = 3
    pixels = np.random.default_rng(1).normal(size=(t, 3, IMAGE, IMAGE)).astype(np.float32)
    gt = np.zeros((2, t, IMAGE, IMAGE), np.float32)
    gt[0, :, 10:30, 20:40] = 1.0
    gt[1, 1, 40:60, 5:25] = 1.0
    boxes = np.zeros((2, t, 2, 2), np.float32)
    boxes[0] = [[20.0, 10.0], [39.0, 29.0]]
    boxes[1, 1] = [[5.0, 40.0], [24.0, 59.0]]
    present = gt.any((2, 3))
    cfg = Sam2LossConfig()
    feats = frame_features(model, jnp.asarray(pixels))
    got = jax.jit(lambda b, p, g: image_term(model, feats, b, p, g, cfg))(boxes, present, gt)

    # the tracker: every frame prompted before any propagation is an initial conditioning frame (no memory)
    tracker = Tracker(model, pixels, [1, 2], cond_capacity=t, bank_dtype=jnp.float32)
    want = {k: np.zeros(2) for k in ("loss_mask", "loss_dice", "loss_class")}
    for f in range(t):
        on = np.flatnonzero(present[:, f])
        low, score = tracker.add_prompts(f, {int(o) + 1: Prompt(box=boxes[o, f].reshape(4)) for o in on})
        for o in on:
            high = jax.image.resize(jnp.asarray(low[o], jnp.float32), (IMAGE, IMAGE), "bilinear", antialias=False)
            parts = sam2_step_losses(jnp.broadcast_to(high, (1, 3, IMAGE, IMAGE)), jnp.zeros((1, 3)),
                                     jnp.asarray(score[o:o + 1, None]), jnp.asarray(gt[o, f][None]), cfg, 1.0)
            for k in want:
                want[k][o] += float(parts[k])
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=1e-5, atol=1e-6, err_msg=k)
    assert float(got["loss_iou"][1]) > 0  # one frame of object 1, its IoU prediction is scored

