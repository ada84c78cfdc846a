"""uint8 pixel rows (normalized in the vision tower), in the HF and the channels-last layout, and uint8 whole frames
(patchified on the device), give the logits of the float32 processor path, for both families; the image rows on
the float side come from transformers' own processor."""

import numpy as np
import pytest

from qwen_vl_helpers import IMG, VEND, VID, VSTART, tiny_hf_config

FAMILIES = ["qwen3_vl", "qwen2_5_vl"]


def _model(family, preprocessing: dict | None = None):
    from flax import nnx

    from converters.qwen_vl_config import from_hf_dict
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration

    config = from_hf_dict(tiny_hf_config(family).to_dict())
    pre = config.default_preprocessing().updated(preprocessing)
    return QwenVLForConditionalGeneration(config, preprocessing=pre, rngs=nnx.Rngs(0))


def _processor_config(model):
    rule = {"min_pixels": 16, "max_pixels": 64 * 64, "budget": "frame"}
    return model.preprocessing.updated({"image": rule, "video": rule})


def _media(cfg, seed):
    """(rng after the draws, two images (2, H, W, 3), a video of 3 frames — odd: the last frame is repeated)."""
    rng = np.random.default_rng(seed)
    factor = cfg.patch_size * cfg.merge_size
    images = rng.integers(0, 256, (2, 2 * factor, 3 * factor, 3), dtype=np.uint8)
    frames = rng.integers(0, 256, (3, 2 * factor, 2 * factor, 3), dtype=np.uint8)
    return rng, images, frames


def _batches(model, seed=0):
    """The same images and video as (float32 batch from the HF processor / our float path, uint8 batch)."""
    from transformers import Qwen2VLImageProcessorPil

    from stvl_jax.models.qwen_vl.host.preprocess import process_images, process_video

    cfg = _processor_config(model)
    rng, images, frames = _media(cfg, seed)
    hf = Qwen2VLImageProcessorPil(patch_size=cfg.patch_size, merge_size=cfg.merge_size,
                                  temporal_patch_size=cfg.temporal_patch_size, image_mean=list(cfg.image_mean),
                                  image_std=list(cfg.image_std),
                                  size={"shortest_edge": cfg.image.min_pixels, "longest_edge": cfg.image.max_pixels})
    ref = hf(list(images), return_tensors="np")
    img8, img_grid = process_images(images, cfg, dtype=np.uint8)
    vid32, vid_grid = process_video(frames, cfg)
    vid8, _ = process_video(frames, cfg, dtype=np.uint8)
    np.testing.assert_array_equal(img_grid, ref["image_grid_thw"])
    merge2 = cfg.merge_size ** 2
    ids = list(rng.integers(0, 240, 3))
    for g in img_grid:
        ids += [VSTART] + [IMG] * (int(g.prod()) // merge2) + [VEND] + list(rng.integers(0, 240, 2))
    t, h, w = (int(v) for v in vid_grid[0])
    groups = t if model.config.family == "qwen3_vl" else 1  # Qwen3-VL: one block per temporal patch
    for _ in range(groups):
        ids += list(rng.integers(0, 240, 2)) + [VSTART] + [VID] * (t * h * w // merge2 // groups) + [VEND]
    ids = np.asarray([ids + list(rng.integers(0, 240, 4))], np.int64)
    base = dict(input_ids=ids, attention_mask=np.ones_like(ids), image_grid_thw=img_grid, video_grid_thw=vid_grid)
    if model.config.family == "qwen2_5_vl":
        base["second_per_grid_ts"] = np.array([1.0], np.float32)
    f32 = dict(base, pixel_values=ref["pixel_values"], pixel_values_videos=vid32)
    u8 = dict(base, pixel_values=img8, pixel_values_videos=vid8)
    return f32, u8


def _processed(model, layout, seed=0):
    """`_batches`' images and video (the same draws) as uint8 in `layout`:
    (images, frames, image pixels, image grid, video pixels, video grid)."""
    from stvl_jax.models.qwen_vl.host.preprocess import process_images, process_video

    cfg = _processor_config(model)
    _, images, frames = _media(cfg, seed)
    img, img_grid = process_images(images, cfg, dtype=np.uint8, layout=layout)
    vid, vid_grid = process_video(frames, cfg, dtype=np.uint8, layout=layout)
    return images, frames, img, img_grid, vid, vid_grid


def _channels_last(model, seed=0):
    """The uint8 batch of `_batches` with the rows built in the channels-last layout (N, T*P*P, C)."""
    _, u8 = _batches(model, seed)
    _, _, img, _, vid, _ = _processed(model, "channels_last", seed)
    for rows, hf_rows in ((img, u8["pixel_values"]), (vid, u8["pixel_values_videos"])):
        assert rows.ndim == 3 and rows.shape[2] == 3
        np.testing.assert_array_equal(rows.transpose(0, 2, 1).reshape(hf_rows.shape), hf_rows)  # same pixels
    return u8, dict(u8, pixel_values=img, pixel_values_videos=vid)


def _frames(model, seed=0):
    """The uint8 batch of `_batches` with the pixels as whole frames (flat bytes, `layout="frames"`)."""
    u8, cl = _channels_last(model, seed)
    images, frames, img, img_grid, vid, vid_grid = _processed(model, "frames", seed)
    np.testing.assert_array_equal(img, images.reshape(-1))  # each image once, as given
    np.testing.assert_array_equal(vid, np.concatenate([frames, frames[-1:]]).reshape(-1))  # odd: last repeated
    np.testing.assert_array_equal(img_grid, u8["image_grid_thw"])
    np.testing.assert_array_equal(vid_grid, u8["video_grid_thw"])
    return cl, dict(u8, pixel_values=img, pixel_values_videos=vid)


@pytest.mark.parametrize("family", FAMILIES)
def test_frames_are_gathered_into_the_channels_last_rows(family):
    """The device gather of whole frames yields exactly the host's channels-last rows, in the same (for
    Qwen2.5-VL window-permuted) order, with row and byte padding from buckets."""
    from stvl_jax.models.qwen_vl.vision import gather_frame_rows
    from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs

    model = _model(family)
    cl, fr = _frames(model)
    vc = model.config.vision
    keys = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
    want = prepare_vision_inputs(model.config, buckets=True, pad_to_multiple=64, **{k: cl[k] for k in keys})
    got = prepare_vision_inputs(model.config, buckets=True, pad_to_multiple=64, **{k: fr[k] for k in keys})
    n = int(np.concatenate([cl["image_grid_thw"], cl["video_grid_thw"]]).prod(-1).sum())
    assert got.pixel_values.ndim == 1 and got.frame_offsets.shape == (len(want.pixel_values), 2)
    assert len(want.pixel_values) > n  # bucket padding is exercised
    rows = np.asarray(gather_frame_rows(got.pixel_values, got.frame_offsets, got.line_stride, vc.patch_size, 3))
    np.testing.assert_array_equal(rows[:n], want.pixel_values[:n])
    np.testing.assert_array_equal(got.pos_hw, want.pos_hw)
    np.testing.assert_array_equal(got.merged_order, want.merged_order)
    # the bytes' length follows the padded row count alone (static shapes under jit), whatever the frames
    row_bytes = vc.temporal_patch_size * vc.patch_size**2 * 3
    assert got.pixel_values.shape == (len(want.pixel_values) * row_bytes,)
    video_only = prepare_vision_inputs(model.config, buckets=True, pad_to_multiple=128, **{
        k: fr[k] for k in ("pixel_values_videos", "video_grid_thw")})
    assert len(video_only.frame_offsets) == len(got.frame_offsets) == 128
    assert video_only.pixel_values.shape == got.pixel_values.shape


def test_frames_of_the_wrong_size_or_kind_are_refused():
    from stvl_jax.errors import InputError

    model = _model("qwen3_vl")
    cl, fr = _frames(model)
    with pytest.raises(InputError, match="frame bytes but video_grid_thw"):
        model(**dict(fr, pixel_values_videos=fr["pixel_values_videos"][:-3]))
    with pytest.raises(InputError, match="raw uint8"):
        model(**dict(fr, pixel_values=fr["pixel_values"].astype(np.float32),
                     pixel_values_videos=fr["pixel_values_videos"].astype(np.float32)))
    with pytest.raises(InputError, match="same layout"):
        model(**dict(fr, pixel_values=cl["pixel_values"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_uint8_pixels_give_the_float32_processor_logits(family):
    model = _model(family)
    f32, u8 = _batches(model)
    assert f32["pixel_values"].dtype == np.float32 and u8["pixel_values"].dtype == np.uint8
    a = np.asarray(model(**f32).logits)
    b = np.asarray(model(**u8).logits)
    assert np.isfinite(a).all()
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", [_channels_last, _frames], ids=["channels_last", "frames"])
def test_uint8_layouts_give_the_same_logits(family, layout):
    """channels-last rows give the HF-layout uint8 rows' logits; whole frames give the channels-last rows'."""
    model = _model(family)
    reference, batch = layout(model)
    np.testing.assert_array_equal(np.asarray(model(**batch).logits), np.asarray(model(**reference).logits))


def test_preprocessing_mean_std_is_used():
    """uint8 pixels are normalized on the device with the model's preprocessing mean/std (the checkpoint's)."""
    model = _model("qwen3_vl", preprocessing={"image_mean": (0.1, 0.2, 0.3), "image_std": (0.9, 0.8, 0.7)})
    assert model.visual.pixel_mean_std == ((0.1, 0.2, 0.3), (0.9, 0.8, 0.7))
    assert _model("qwen2_5_vl").visual.pixel_mean_std[0] == (0.48145466, 0.4578275, 0.40821073)
    f32, u8 = _batches(model, seed=1)  # the processor side uses the overridden statistics too
    np.testing.assert_allclose(np.asarray(model(**u8).logits), np.asarray(model(**f32).logits), rtol=0, atol=1e-5)


def test_mixed_or_out_of_range_integer_pixels_are_refused():
    from stvl_jax.errors import InputError

    model = _model("qwen3_vl")
    f32, u8 = _batches(model)
    with pytest.raises(InputError, match="both"):
        model(**dict(u8, pixel_values_videos=f32["pixel_values_videos"]))
    _, cl = _channels_last(model)
    with pytest.raises(InputError, match="same layout"):
        model(**dict(cl, pixel_values_videos=u8["pixel_values_videos"]))
    with pytest.raises(InputError, match="raw uint8"):
        model(**dict(cl, pixel_values=cl["pixel_values"].astype(np.float32),
                     pixel_values_videos=cl["pixel_values_videos"].astype(np.float32)))
    with pytest.raises(InputError, match="T\\*P\\*P, C"):
        model(**dict(cl, pixel_values=cl["pixel_values"][:, :, :2]))
    with pytest.raises(InputError, match="0..255"):
        model(**dict(u8, pixel_values=u8["pixel_values"].astype(np.int64) + 1,
                     pixel_values_videos=u8["pixel_values_videos"].astype(np.int64)))
