"""Host-side vision preparation: window permutation vs transformers, segment layouts, shape buckets."""

import numpy as np
import pytest

from stvl_jax.models.qwen_vl.vision_inputs import window_permutation
from stvl_jax.nn.attention import SegmentLayout
from stvl_jax.nn.shapes import bucket


@pytest.mark.torch
@pytest.mark.parametrize("grid", [[[1, 8, 12]], [[2, 6, 4], [1, 16, 16]], [[3, 10, 2]]])
def test_window_permutation_matches_transformers(grid):
    torch = pytest.importorskip("torch")
    from transformers.vision_utils import get_vision_window_index

    grid = np.asarray(grid)
    ref_index, ref_cu = get_vision_window_index(torch.from_numpy(grid), spatial_merge_size=2, window_size=112,
                                                patch_size=14)
    perm, window_of_unit = window_permutation(grid, merge=2, window_merged=4)
    np.testing.assert_array_equal(perm, ref_index.numpy())
    # window sizes in permuted order, in rows (4 per merged unit), equal HF's cu_window_seqlens steps
    sizes = np.diff(np.flatnonzero(np.diff(np.r_[-1, window_of_unit, -2]) != 0)) * 4
    np.testing.assert_array_equal(sizes, np.diff(ref_cu.numpy()))


def test_segment_layout_round_trip():
    ids = np.array([2, 0, 0, 2, -1, 1, 2, 0])
    lay = SegmentLayout.from_segment_ids(ids, bucket_segments=True)
    assert lay.gather.shape == (4, 3)  # 3 segments bucketed to 4; longest segment has 3 rows
    rows = np.arange(len(ids))
    flat_rows = lay.gather.reshape(-1)
    for r in rows[ids >= 0]:
        slot = lay.scatter[r]
        assert lay.valid.reshape(-1)[slot] and flat_rows[slot] == r
    for s in range(3):  # each segment holds exactly its rows, in order
        members = lay.gather[s][lay.valid[s]]
        assert len(set(ids[members])) == 1 and list(members) == sorted(members)
    assert not lay.valid[3].any()  # the padding segment is empty


def test_bucket_sizes():
    assert [bucket(n) for n in (1, 16, 17, 33, 100, 1000, 1025)] == [16, 16, 20, 40, 112, 1024, 1280]
    for n in range(1, 5000, 37):  # at most 25% padding above the minimum, never smaller
        assert n <= bucket(n) <= max(16, int(n * 1.25) + 1)


@pytest.mark.parametrize("preset", ["qwen3vl_tiny", "qwen25vl_tiny"])
def test_bucketed_batches_share_one_program_and_keep_the_tokens(preset):
    """Frame counts in one bucket give one pytree structure (the layouts' dense segment count is static
    metadata: a count per batch meant a compile per batch), and padding leaves the real merged tokens as
    they are without it."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from stvl_jax.models.qwen_vl.presets import load_model_config
    from stvl_jax.models.qwen_vl.vision import VisionTower
    from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs

    config = load_model_config(preset)
    pixels = np.random.default_rng(0).integers(0, 256, (10 * 16, config.vision.patch_dim), dtype=np.uint8)

    def inputs(images: int, buckets: bool):
        grid = np.tile([[1, 4, 4]], (images, 1))
        return prepare_vision_inputs(config, pixel_values=pixels[: images * 16], image_grid_thw=grid,
                                     buckets=buckets)

    nine, ten = inputs(9, True), inputs(10, True)  # 9 and 10 frames: both bucket to 10 segments, 160 rows
    assert jax.tree.structure(nine) == jax.tree.structure(ten)
    assert [x.shape for x in jax.tree.leaves(nine)] == [x.shape for x in jax.tree.leaves(ten)]

    tower = VisionTower(config, rngs=nnx.Rngs(0))
    tokens = 9 * 16 // config.vision.merge_unit

    def real_tokens(vi):
        merged = np.asarray(tower(jax.tree.map(jnp.asarray, vi))[0])
        return merged[np.asarray(vi.merged_order)[:tokens]]

    np.testing.assert_allclose(real_tokens(nine), real_tokens(inputs(9, False)), rtol=1e-5, atol=1e-6)


def test_empty_vision_parts_are_no_parts():
    """A batch whose rows hold no image (a text-only chat batch: the pipeline's (0, row) pixel arrays and (0, 3)
    grids) has no vision inputs, and an empty image part beside a video leaves the video's inputs unchanged."""
    import jax

    from stvl_jax.models.qwen_vl.presets import load_model_config
    from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs

    config = load_model_config("qwen25vl_tiny")
    empty = {"pixel_values": np.zeros((0, config.vision.patch_dim), np.float32),
             "image_grid_thw": np.zeros((0, 3), np.int64)}
    assert prepare_vision_inputs(config, **empty) is None
    video = {"pixel_values_videos": np.random.default_rng(0).normal(size=(32, config.vision.patch_dim)),
             "video_grid_thw": np.array([[2, 4, 4]])}
    alone, beside = prepare_vision_inputs(config, **video), prepare_vision_inputs(config, **empty, **video)
    assert int(beside.num_image_tokens) == 0
    assert jax.tree.structure(alone) == jax.tree.structure(beside)
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(beside)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
