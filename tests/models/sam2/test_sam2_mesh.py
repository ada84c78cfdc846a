"""The SAM2 image model placed on a 2x2x2 mesh by the rules table (parameters sharded by their logical axes, the
batch over data x fsdp) gives transformers' outputs, as on one device (fp32, 1e-4)."""

import jax
import numpy as np
import pytest
from flax import nnx

from sam2_helpers import IMAGE, hf_state, our_config, t2n, torch_model

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def test_image_model_on_2x2x2_mesh_matches_transformers():
    from converters.sam2_keys import build_from_hf_state
    from stvl_jax.models.sam2.image_model import Sam2ImageModel
    from stvl_jax.sharding import describe_shardings, host_to_mesh, make_mesh, place_on_mesh

    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    shape = "a"
    cfg = our_config(shape)
    ours = build_from_hf_state(lambda: Sam2ImageModel(cfg, rngs=nnx.Rngs(0)), cfg, hf_state(torch_model(shape)))
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    place_on_mesh(ours, mesh)
    report = describe_shardings(nnx.state(ours), mesh)
    assert report.replicated_fraction < 0.5, report.summary()
    qkv = ours.vision_encoder.backbone.block_6.attn.qkv.kernel.get_value()  # (vis_embed, 3, vis_heads, head_dim)
    assert qkv.sharding.spec == jax.sharding.PartitionSpec("fsdp", None, "tensor", None)

    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(4, 3, IMAGE, IMAGE)).astype(np.float32)
    x0y0 = rng.uniform(0, IMAGE / 2, (4, 1, 2))
    boxes = np.concatenate([x0y0, x0y0 + rng.uniform(4, IMAGE / 2, (4, 1, 2))], -1).astype(np.float32)
    with torch.no_grad():
        ref = torch_model(shape)(pixel_values=torch.from_numpy(pixels), input_boxes=torch.from_numpy(boxes))
    with jax.set_mesh(mesh):
        px = host_to_mesh(pixels, mesh, ("act_batch", None, None, None))
        bx = host_to_mesh(boxes, mesh, ("act_batch", None, None))
        out = nnx.jit(lambda m, p, b: m(pixel_values=p, input_boxes=b))(ours, px, bx)
    assert len(out.pred_masks.sharding.device_set) == 8
    for name in ("pred_masks", "iou_scores", "object_score_logits"):
        np.testing.assert_allclose(np.asarray(getattr(out, name)), t2n(getattr(ref, name)), atol=1e-4, rtol=0,
                                   err_msg=name)
