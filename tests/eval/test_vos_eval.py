"""`evaluate_vos` with stand-in segmenters: the ground truth itself, and a colour tracker that reads the frames."""

import numpy as np
import pytest

from data_pipelines.synthetic import generate_dataset
from data_pipelines.vos import VosClipConfig, VosReader, vos_synth_config
from stvl_jax.eval.vos_eval import box_copy, evaluate_vos


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("vos"))
    generate_dataset(root, vos_synth_config(num_videos=3, seed=1), workers=1)
    reader = VosReader(root, "train", VosClipConfig(num_frames=8, frame_stride=2), decode=True)
    return list(reader.clips())[:6]


def oracle(clip, prompts):
    return clip.masks.copy()


def colour_tracker(clip, prompts):
    """Every pixel within 30 of the colour at the centre of the object's prompt box, on every frame."""
    out = np.zeros(clip.masks.shape, bool)
    for p in prompts:
        x0, y0, x1, y1 = p.box
        ref = clip.frames[p.frame, int((y0 + y1) / 2), int((x0 + x1) / 2)].astype(int)
        out[p.object] = (np.abs(clip.frames.astype(int) - ref).max(-1) <= 30)
    return out


def test_oracle_scores_one_and_the_controls_are_reported(clips):
    res = evaluate_vos(clips, oracle)
    assert res["clips"] == len(clips) and res["objects"] == sum(c.num_objects for c in clips)
    assert res["model"]["overall"]["JF"] == pytest.approx(1.0)
    assert res["box_copy"]["overall"]["JF"] < 0.95  # boxes are not masks, and the objects move
    assert res["black_frames"]["overall"]["JF"] == pytest.approx(1.0)  # the oracle does not read frames
    assert set(res["model"]["per_case"]) >= {"late_entry"}


def test_a_segmenter_that_reads_frames_loses_its_score_on_black_frames(clips):
    res = evaluate_vos(clips, colour_tracker)
    assert res["black_frames"]["overall"]["J_mean"] < res["model"]["overall"]["J_mean"] - 0.2


def test_box_copy_starts_at_the_prompted_frame(clips):
    from data_pipelines.vos import first_frame_box_prompts

    clip = next(c for c in clips if (c.first_visible > 0).any())
    prompts = first_frame_box_prompts(clip)
    pred = box_copy(clip, prompts)
    for p in prompts:
        assert not pred[p.object, :p.frame].any() and pred[p.object, p.frame:].any(axis=(1, 2)).all()
        assert (pred[p.object, p.frame] >= clip.masks[p.object, p.frame]).all()  # the box covers its mask
