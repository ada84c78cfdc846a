"""SAM2 mask postprocessing vs transformers' own `Sam2VideoVideoProcessor.post_process_masks` (its code runs
without torchvision when called on a stand-in `self`; only the processor's constructor needs torchvision)."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from stvl_jax.models.sam2.postprocess import masks_from_logits, upsample_logits

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.mark.parametrize("orig", [(480, 640), (37, 50), (256, 256)])
def test_equals_hf_post_process_masks(orig):
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    rng = np.random.default_rng(orig[0])
    low = rng.normal(scale=4.0, size=(3, 2, 64, 64)).astype(np.float32)  # (frames, objects, h, w)
    stand_in = types.SimpleNamespace(size={"height": 256, "width": 256})
    ref = Sam2VideoVideoProcessor.post_process_masks(stand_in, [torch.from_numpy(low)], [orig], [(256, 256)],
                                                     binarize=False)[0].numpy()
    got = np.asarray(upsample_logits(jnp.asarray(low), 256, *orig))
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    ref_masks = Sam2VideoVideoProcessor.post_process_masks(stand_in, [torch.from_numpy(low)], [orig], [(256, 256)])
    got_masks = np.asarray(masks_from_logits(jnp.asarray(low), 256, *orig))
    # masks can only differ where the logit is within float error of the threshold
    differ = got_masks != ref_masks[0].numpy()
    assert np.abs(ref[differ]).max(initial=0) < 1e-5
