"""`stvl segment`'s prompt parsing/checks and its output files (the model-free parts)."""

import argparse
import json

import numpy as np
import pytest

from data_pipelines.rle import rle_decode
from stvl_jax.errors import InputError
from stvl_jax.infer.segment_outputs import (
    draw_masks, write_contact_sheet, write_logits, write_masks_json, write_overlay_video,
)
from stvl_jax.infer.segment_prompts import Prompt, add_prompt_arguments, check_prompts, encode_prompts


def _parse(*argv):
    p = argparse.ArgumentParser(prog="stvl segment", exit_on_error=False)
    add_prompt_arguments(p)
    return p.parse_args(list(argv)).prompts


def test_frame_and_object_apply_to_the_prompts_that_follow():
    got = _parse("--box", "10,20,110,90", "--object", "2", "--point", "200,50", "--point", "210,80:0",
                 "--frame", "12", "--box", "1,2,3,4")
    assert got == [Prompt("box", (10, 20, 110, 90), 0, 1, flag="10,20,110,90"),
                   Prompt("point", (200, 50), 0, 2, 1, flag="200,50"),
                   Prompt("point", (210, 80), 0, 2, 0, flag="210,80:0"),
                   Prompt("box", (1, 2, 3, 4), 12, 2, flag="1,2,3,4")]


@pytest.mark.parametrize("argv,msg", [(("--box", "1,2,3"), "4 comma-separated numbers"),
                                      (("--point", "1,2:7"), "label"),
                                      (("--point", "a,b"), "2 comma-separated"),
                                      (("--frame", "-1", "--box", "1,2,3,4"), "non-negative"),
                                      (("--object", "0",), "positive")])
def test_malformed_prompt_flags_are_argparse_errors(argv, msg, capsys):
    with pytest.raises(SystemExit):
        _parse(*argv)
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("prompts,msg", [
    ([], "no prompt"),
    ([Prompt("box", (10, 10, 5, 20), 0, 1, flag="10,10,5,20")], "inverted"),
    ([Prompt("box", (10, 10, 70, 20), 0, 1, flag="10,10,70,20")], "outside the 64x48 frame"),
    ([Prompt("point", (10, -1), 0, 1, flag="10,-1")], "outside"),
    ([Prompt("point", (10, 10), 9, 1, flag="10,10")], "frame 9 is past the end"),
    ([Prompt("point", (10, 10), 0, 3, 0, flag="10,10:0")], "only background"),
])
def test_bad_prompts_are_one_line(prompts, msg):
    with pytest.raises(InputError, match=msg) as e:
        check_prompts(prompts, num_frames=9, height=48, width=64, video="v.mp4")
    assert "\n" not in str(e.value)


def test_encoding_scales_to_the_model_input():
    prompts = [Prompt("point", (32, 12), 2, 1, 0), Prompt("box", (16, 24, 48, 36), 2, 1),
               Prompt("point", (8, 6), 0, 4)]
    enc = encode_prompts(prompts, height=48, width=64, image_size=1024)
    # x * 1024 / 64 = 16 x, y * 1024 / 48: Meta's add_new_points_or_box / HF's processor normalise the same way
    np.testing.assert_allclose(enc[(2, 1)].box, [256, 512, 768, 768], rtol=1e-6)
    np.testing.assert_allclose(enc[(2, 1)].points, [[512, 256]], rtol=1e-6)
    assert enc[(2, 1)].labels.tolist() == [0]
    assert enc[(0, 4)].box is None and enc[(0, 4)].labels.tolist() == [1]
    with pytest.raises(InputError, match="more than one --box"):
        encode_prompts(prompts + [Prompt("box", (1, 1, 5, 5), 2, 1)], 48, 64, 1024)


def test_outputs(tmp_path):
    import av

    rng = np.random.default_rng(0)
    t, h, w = 5, 47, 63  # odd sides: the overlay crops to even ones
    frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    masks = np.zeros((t, 2, h, w), bool)
    masks[:, 0, 5:20, 10:30] = True
    masks[2:, 1, 30:40, 40:60] = True
    scores = np.array([[3.0, -2.0]] * t, np.float32)
    prompts = [Prompt("box", (10, 5, 30, 20), 0, 1)]
    doc = write_masks_json(str(tmp_path / "masks.json"), video="v.mp4", fps=4.0, times=np.arange(t) / 4,
                           object_ids=[1, 7], masks=masks, score_logits=scores, prompts=prompts)
    back = json.load(open(tmp_path / "masks.json"))
    assert back == json.loads(json.dumps(doc)) and back["format"] == "stvl-jax/segment-masks"
    for i in range(t):
        for k, obj in enumerate(back["frames"][i]["objects"]):
            np.testing.assert_array_equal(rle_decode(obj["rle"]), masks[i, k])
            assert obj["area"] == masks[i, k].sum() and obj["present"] == (k == 0)
    assert back["frames"][0]["objects"][0]["score"] == pytest.approx(1 / (1 + np.exp(-3.0)))

    write_overlay_video(str(tmp_path / "overlay.mp4"), frames, masks, fps=4.0)
    with av.open(str(tmp_path / "overlay.mp4")) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == t and decoded[0].shape == (46, 62, 3)
    picks = write_contact_sheet(str(tmp_path / "sheet.png"), frames, masks, np.arange(t) / 4, n=3, columns=2,
                                thumb_width=32)
    assert picks == [0, 2, 4]
    from PIL import Image

    assert Image.open(tmp_path / "sheet.png").size == (64, 2 * 24)
    write_logits(str(tmp_path / "logits.npz"), rng.normal(size=(t, 2, 8, 8)), [1, 7], scores)
    z = np.load(tmp_path / "logits.npz")
    assert z["logits"].shape == (t, 2, 8, 8) and z["object_ids"].tolist() == [1, 7]


def test_draw_masks_tints_inside_and_keeps_outside():
    frame = np.full((6, 6, 3), 100, np.uint8)
    m = np.zeros((1, 6, 6), bool)
    m[0, 1:5, 1:5] = True
    out = draw_masks(frame, m)
    assert (out[0, 0] == 100).all() and (out[5, 5] == 100).all()
    assert out[1, 1].tolist() == [31, 119, 180]  # the outline takes the object's colour
    assert out[2, 2].tolist() == [66, 110, 140]  # inside: (100 + colour) / 2, rounded


def test_a_checkpoint_of_another_model_is_one_line(monkeypatch):
    import stvl_jax
    from stvl_jax.infer.segment_cli import load_sam2_video

    class QwenVLForConditionalGeneration:  # what load_model returns for a Qwen-VL checkpoint
        pass

    monkeypatch.setattr(stvl_jax, "load_model", lambda path: QwenVLForConditionalGeneration())
    with pytest.raises(InputError, match="holds a QwenVLForConditionalGeneration, not a SAM2 video model"):
        load_sam2_video("ckpt/qwen")
