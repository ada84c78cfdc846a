"""`stvl segment` end to end on a tiny SAM2 checkpoint and a real mp4: the files it writes, and its low-res logits
against transformers' `Sam2VideoModel` session fed the same preprocessed frames and the same prompts (scaled to the
model input as HF's processor scales them). Both sides store memories in bf16 as shipped, so the comparison is on
the binarised masks and the object-score signs (tests/models/sam2_video/test_tracking_vs_transformers.py holds
the 1e-4 logit comparison with fp32 storage)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from data_pipelines.rle import rle_decode  # noqa: E402
from stvl_jax.cli import main  # noqa: E402
from video_helpers import IMAGE, flax_video_model, torch_video_model  # noqa: E402

W, H, T = 80, 48, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from stvl_jax.models.sam2.loading import save_model

    import av

    d = tmp_path_factory.mktemp("seg")

    with av.open(str(d / "sq.mp4"), "w") as c:  # a square moving right over a dark background
        s = c.add_stream("mpeg4", rate=4)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(T):
            img = np.full((H, W, 3), 40, np.uint8)
            img[10:26, 8 + 6 * i:24 + 6 * i] = (220, 60, 60)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    ckpt = save_model(flax_video_model(), None, d / "ckpt")
    return {"video": str(d / "sq.mp4"), "ckpt": str(ckpt), "dir": d}


def _hf_logits(frames, boxes_and_points):
    """transformers' session on our preprocessed frames; prompts already in model-input pixels."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig, preprocess_frames

    pixels = preprocess_frames(frames, Sam2PreprocessConfig(image_size=IMAGE))
    model = torch_video_model()
    session = Sam2VideoInferenceSession(video=torch.from_numpy(pixels), video_height=H, video_width=W,
                                        dtype=torch.float32)
    low = np.zeros((T, 2, IMAGE // 4, IMAGE // 4), np.float32)
    scores = np.zeros((T, 2), np.float32)
    with torch.no_grad():
        for frame, obj, pts, labels in boxes_and_points:
            idx = session.obj_id_to_idx(obj)
            session.add_point_inputs(idx, frame, {
                "point_coords": torch.tensor(pts, dtype=torch.float32)[None, None],
                "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None]})
            session.obj_with_new_inputs = [obj]
            model(inference_session=session, frame_idx=frame)
        for reverse in (False, True):
            for o in model.propagate_in_video_iterator(session, reverse=reverse):
                low[o.frame_idx] = o.pred_masks.numpy().reshape(2, IMAGE // 4, IMAGE // 4)
                scores[o.frame_idx] = o.object_score_logits.numpy().reshape(-1)
    return low, scores


def test_segment_writes_masks_overlay_sheet_and_logits_equal_to_transformers(setup, capsys):
    out = setup["dir"] / "out"
    rc = main(["segment", setup["video"], "--ckpt", setup["ckpt"], "--frame", "1", "--box", "14,10,30,26",
               "--object", "2", "--frame", "3", "--point", "60,40", "--point", "30,18:0", "--out", str(out),
               "--save-logits", "--sheet-frames", "4"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == T and summary["objects"] == [1, 2]
    doc = json.load(open(out / "masks.json"))
    assert doc["format"] == "stvl-jax/segment-masks" and (doc["height"], doc["width"]) == (H, W)
    assert len(doc["frames"]) == T and [o["object"] for o in doc["frames"][0]["objects"]] == [1, 2]
    z = np.load(out / "logits.npz")
    assert z["logits"].shape == (T, 2, IMAGE // 4, IMAGE // 4)
    for name in ("overlay.mp4", "contact_sheet.png"):
        assert (out / name).stat().st_size > 0

    # the reference: HF's session on the same frames, prompts scaled by (64 / 80, 64 / 48) as its processor does
    from data_pipelines.video import read_video

    frames = read_video(setup["video"]).frames
    sx, sy = IMAGE / W, IMAGE / H
    box = [[14 * sx, 10 * sy], [30 * sx, 26 * sy]]
    low, scores = _hf_logits(frames, [(1, 1, box, [2, 3]), (3, 2, [[60 * sx, 40 * sy], [30 * sx, 18 * sy]], [1, 0])])
    np.testing.assert_array_equal(z["logits"] > 0, low > 0)
    np.testing.assert_array_equal(z["object_score_logits"] > 0, scores > 0)
    # masks.json holds the upsampled masks of those logits at the video's size
    from stvl_jax.models.sam2.postprocess import masks_from_logits

    for t in (0, T - 1):
        want = np.asarray(masks_from_logits(z["logits"][t], IMAGE, H, W))
        for k, obj in enumerate(doc["frames"][t]["objects"]):
            np.testing.assert_array_equal(rle_decode(obj["rle"]), want[k])


@pytest.mark.parametrize("argv,msg", [
    (["--box", "10,10,5,20"], "inverted"),
    (["--box", "10,10,90,20"], "outside the 80x48 frame"),
    (["--frame", "9", "--point", "5,5"], "frame 9 is past the end"),
])
def test_bad_prompts_are_one_line(setup, capsys, argv, msg):
    rc = main(["segment", setup["video"], "--ckpt", setup["ckpt"], *argv, "--out", str(setup["dir"] / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("stvl segment: error:") and msg in err[-1]
