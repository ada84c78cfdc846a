"""The tracking step with the objects data-parallel and the model sharded on a 2x2x2 mesh == one device, and the
step under `jax.grad` (training): finite gradients reaching the image encoder, the memory attention and the
memory encoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytest.importorskip("torch")
pytest.importorskip("transformers")

from converters.sam2_video_keys import load_hf_video_state  # noqa: E402
from stvl_jax.models.sam2.tracker import Tracker  # noqa: E402
from stvl_jax.models.sam2.tracker_step import TRACK, frame_features, frame_step  # noqa: E402
from stvl_jax.models.sam2.video_model import abstract_video_model  # noqa: E402
from stvl_jax.sharding import host_to_mesh, make_mesh, place_on_mesh  # noqa: E402
from video_helpers import hf_state, our_video_config, torch_video_model  # noqa: E402

T = 8


def _fresh_model():  # not the cached test model: placing on the mesh moves its params in place
    cfg = our_video_config()
    return load_hf_video_state(abstract_video_model(cfg), cfg, hf_state(torch_video_model()))


def _tracked_state():
    """Two objects clicked on frame 0, tracked through frame 3 (fp32 banks); frame 4's inputs."""
    model = _fresh_model()
    pixels = np.random.default_rng(5).normal(size=(T, 3, 64, 64)).astype(np.float32)
    tracker = Tracker(model, pixels, [1, 2], cond_capacity=2, bank_dtype=jnp.float32)
    tracker.add_prompts(0, {1: ([[20.0, 30.0]], [1]), 2: ([[44.0, 10.0]], [1])})
    for _ in tracker.propagate(max_frames=3):
        pass
    return model, tracker.banks, jnp.asarray(pixels[4:5])


def _step(model, banks, pixels, frame=4):
    feats = frame_features(model, pixels)
    mode = jnp.full((2,), TRACK, jnp.int32)
    return frame_step(model, banks, feats, frame, mode, jnp.zeros((2,), bool), False, cond_capacity=2,
                      num_frames=T)


@pytest.mark.slow  # ~70 s: the step compiled for one device and for the mesh
def test_objects_data_parallel_on_2x2x2_mesh_match_one_device():
    model, banks, pixels = _tracked_state()
    ref_banks, ref = nnx.jit(_step)(model, banks, pixels)
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with jax.set_mesh(mesh):
        place_on_mesh(model, mesh)
        on_mesh = lambda x: host_to_mesh(x, mesh, ("act_batch",) + (None,) * (np.ndim(x) - 1))  # noqa: E731
        new_banks, out = nnx.jit(_step)(model, jax.tree.map(on_mesh, banks), pixels)
    assert len(out.low_res_logits.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out.low_res_logits), np.asarray(ref.low_res_logits), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(out.object_score_logits), np.asarray(ref.object_score_logits), atol=1e-4,
                               rtol=0)
    np.testing.assert_allclose(np.asarray(new_banks.features), np.asarray(ref_banks.features), atol=1e-4, rtol=0)


@pytest.mark.slow  # the backward pass of two steps compiles for minutes on a loaded 2-core CPU
def test_step_is_differentiable():
    model, banks, pixels = _tracked_state()

    def loss(model):  # two frames: frame 5 reads the memory frame 4 wrote (memory-encoder gradients)
        new_banks, out4 = _step(model, banks, pixels)
        _, out5 = _step(model, new_banks, pixels[:, :, ::-1], frame=5)
        return sum(jnp.mean(jax.nn.sigmoid(o.low_res_logits)) + jnp.mean(o.object_score_logits) for o in (out4, out5))

    grads = nnx.jit(nnx.grad(loss))(model)
    for path in (("image", "vision_encoder", "backbone"), ("memory_attention",), ("memory_encoder",)):
        sub = grads
        for p in path:
            sub = sub[p]
        leaves = [np.asarray(x) for x in jax.tree.leaves(sub)]
        assert all(np.isfinite(x).all() for x in leaves), path
        assert max(np.abs(x).max() for x in leaves) > 0, path
