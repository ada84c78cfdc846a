"""The closed loop of docs/sam2.md: our SAM2 video checkpoint -> `stvl convert export` -> transformers'
`Sam2VideoModel.from_pretrained` segments held-out synthetic clips as our tracker does (benchmarks/sam2_closed_loop;
the trained model's figures are in docs/sam2.md)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks.sam2_closed_loop import closed_loop, frame_ious  # noqa: E402
from data_pipelines.synthetic import generate_dataset  # noqa: E402
from data_pipelines.vos import vos_synth_config  # noqa: E402


def test_frame_ious_by_hand():
    a = np.zeros((2, 2, 4, 4), bool)
    b = np.zeros_like(a)
    a[0, 0, :2, :2] = True  # 4 px
    b[0, 0, :2, :3] = True  # 6 px, 4 shared
    b[1, 1, 0, 0] = True  # object 1 frame 1: empty vs 1 px
    np.testing.assert_allclose(frame_ious(a, b), [[4 / 6, 1.0], [1.0, 0.0]])


def _present_model(seed: int):
    """The tiny random video model with its object-score head biased to "present": a random model scores every
    object absent, and its masks are then empty on both sides, which would make the comparison vacuous."""
    from converters.sam2_video_keys import load_hf_video_state
    from stvl_jax.models.sam2.video_model import abstract_video_model
    from video_helpers import hf_state, our_video_config, torch_video_model

    state = dict(hf_state(torch_video_model(seed)))
    key = "mask_decoder.pred_obj_score_head.proj_out.bias"
    state[key] = state[key] + 20.0
    cfg = our_video_config()
    return load_hf_video_state(abstract_video_model(cfg), cfg, state)


@pytest.mark.slow
def test_exported_tiny_model_tracks_like_ours_in_transformers(tmp_path):
    from benchmarks.sam2_closed_loop import hf_segmenter
    from converters import export_sam2
    from converters.sam2_verify_video import hf_video_model
    from data_pipelines.vos import VosClipConfig, VosReader, first_frame_box_prompts
    from stvl_jax.eval.vos_eval import sam2_segmenter
    from stvl_jax.infer.segment_cli import load_sam2_video
    from stvl_jax.models.sam2.loading import save_model

    data = tmp_path / "vos"
    generate_dataset(str(data), vos_synth_config(num_videos=4, seed=3), workers=1)
    ckpt = save_model(_present_model(1), None, tmp_path / "ckpt")
    res = closed_loop(str(ckpt), str(data), "train", frames=6, frame_stride=2, limit=2)
    assert res["clips"] == 2 and res["frames_compared"] > 0
    assert res["iou_min"] >= 0.99, res
    # the comparison can fail: masks are not empty, and another model's export disagrees
    model = load_sam2_video(str(ckpt))
    export_sam2(save_model(_present_model(2), None, tmp_path / "other"), tmp_path / "other_hf", progress=False)
    clip = next(VosReader(str(data), "train", VosClipConfig(num_frames=6, frame_stride=2), decode=True).clips())
    prompts = first_frame_box_prompts(clip)
    ours = sam2_segmenter(model)(clip, prompts)
    assert ours.mean() > 0.05
    other = hf_segmenter(hf_video_model(tmp_path / "other_hf"), model)(clip, prompts)
    assert frame_ious(ours, other).min() < 0.9
