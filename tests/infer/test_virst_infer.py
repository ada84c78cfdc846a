"""VIRST inference (`stvl_jax.infer.virst`): the frame sampling and the teacher-forced prompt against hand-written
expectations, the one-line refusals, and a tiny RANDOM VIRST checkpoint end to end through `stvl eval rvos
--format synthetic` and `stvl segment --query` (outputs exist with the right shapes, scores in [0, 1]; random
weights: no claim on quality)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from stvl_jax.errors import InputError
from stvl_jax.infer.virst import load_predictor, virst_prompt, vlm_frame_indices


def test_vlm_frames_are_the_middles_of_equal_spans():
    # (k + 0.5) * T / 8, floored: 0.625 1.875 3.125 4.375 5.625 6.875 8.125 9.375
    assert vlm_frame_indices(10, 8).tolist() == [0, 1, 3, 4, 5, 6, 8, 9]
    # a 3-frame video repeats frames: 0.19 0.56 0.94 1.31 1.69 2.06 2.44 2.81
    assert vlm_frame_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from data_pipelines.tokenizer import build_tiny_tokenizer, open_tokenizer

    tok = open_tokenizer(build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))
    tok.add_tokens(["[SEG]"])
    assert tok.convert_tokens_to_ids("[SEG]") == 512
    return tok


def test_teacher_forced_prompt_holds_the_templates_and_the_seg_tokens(tokenizer):
    from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig

    vision = PreprocessConfig.qwen3_vl()
    grid = np.array([2, 4, 4])  # 2 temporal groups of 4x4 patches: 4 tokens each after the 2x2 merge
    ids = virst_prompt(tokenizer, vision, grid, np.array([0.0, 1.0, 2.0, 3.0]), "the red circle", 10, "[SEG]")
    assert (ids == 512).sum() == 10
    assert (ids == tokenizer.convert_tokens_to_ids("<|video_pad|>")).sum() == 8
    text = tokenizer.decode(ids, skip_special_tokens=False)
    seg = ", ".join(f"({i}) [SEG]" for i in range(10))
    want = ("<|im_start|>user\nReference Video: "
            "<0.5 seconds><|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>"
            "<2.5 seconds><|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>"
            " \nWhat is the red circle in the Reference Video? Please respond with segmentation mask in the Target "
            f"Image.<|im_end|>\n<|im_start|>assistant\nIt is {seg}.<|im_end|>\n")
    assert text == want


def test_non_virst_checkpoints_are_one_line(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_predictor(str(tmp_path / "missing"))
    sam2 = tmp_path / "sam2"
    sam2.mkdir()
    (sam2 / "stvl_config.json").write_text(json.dumps({"format": "stvl-jax/sam2"}))
    with pytest.raises(InputError, match=r"'.*sam2' is a sam2 checkpoint, not VIRST"):
        load_predictor(str(sam2))
    with pytest.raises(InputError, match="not an stvl-jax checkpoint"):
        load_predictor(str(tmp_path))


def _tiny_config():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models", "virst"))
    from virst_helpers import tiny_config

    return tiny_config()


@pytest.fixture(scope="module")
def virst_ckpt(tmp_path_factory, tokenizer):
    """A tiny VIRST with random weights (tiny Qwen3-VL + tiny SAM2) and its tokenizer, as a checkpoint."""
    import stvl_jax
    from stvl_jax.models.virst.model import init_virst_model

    path = tmp_path_factory.mktemp("virst") / "ckpt"
    stvl_jax.save_model(init_virst_model(_tiny_config(), seed=0), None, path)
    tokenizer.save_pretrained(str(path / "tokenizer"))
    return str(path)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from stvl_jax.data_cli import main

    out = str(tmp_path_factory.mktemp("rvos_synth"))
    assert main(["synth", "--out", out, "--videos", "4", "--seed", "3", "--workers", "1", "--export", "rvos"]) == 0
    return out


@pytest.mark.slow  # builds, saves, loads and compiles the tiny VIRST (minutes on 2 shared cores)
def test_random_virst_end_to_end_eval_and_segment(virst_ckpt, synth, tmp_path, capsys):
    from data_pipelines.formats.rvos import RvosDataset
    from stvl_jax.cli import main

    out = str(tmp_path / "eval")
    assert main(["eval", "rvos", "--ckpt", virst_ckpt, "--data", synth, "--format", "synthetic", "--split", "train",
                 "--limit", "2",
                 "--sheets", "1", "--out", out]) == 0
    res = json.load(open(os.path.join(out, "rvos_metrics.json")))
    assert res["scored"] == 2
    for run in ("model", "black_frames", "other_entity"):
        o = res[run]["overall"]
        assert 0.0 <= o["J_mean"] <= 1.0 and 0.0 <= o["F_mean"] <= 1.0 and 0.0 <= o["JF"] <= 1.0
    ds = RvosDataset(synth, "synthetic", "train")
    e = ds.expressions[0]
    frames = ds.read_frames(e)
    pngs = sorted(os.listdir(os.path.join(out, "submission", e.vid, e.exp_id)))
    assert pngs == sorted(f + ".png" for f in e.frames)
    from PIL import Image

    assert np.asarray(Image.open(os.path.join(out, "submission", e.vid, e.exp_id, pngs[0]))).shape == frames.shape[1:3]
    assert os.path.isfile(os.path.join(out, "rvos_jf_per_kind.png"))

    # stvl segment --query on a video file of that clip
    from data_pipelines.synthetic.render import write_mp4
    from data_pipelines.video import read_video

    video = str(tmp_path / "clip.mp4")
    write_mp4(video, frames[:12], fps=8)
    seg_out = str(tmp_path / "seg")
    capsys.readouterr()
    assert main(["segment", video, "--ckpt", virst_ckpt, "--query", e.text, "--out", seg_out]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["objects"] == [1] and summary["frames"] == 12
    doc = json.load(open(os.path.join(seg_out, "masks.json")))
    decoded = read_video(video).frames
    assert (doc["num_frames"], doc["height"], doc["width"]) == (12, *decoded.shape[1:3])
    assert doc["query"] == e.text and doc["prompts"] == [] and doc["object_ids"] == [1]
    for fr in doc["frames"]:
        (obj,) = fr["objects"]
        assert 0.0 <= obj["score"] <= 1.0 and obj["rle"]["size"] == list(decoded.shape[1:3])
        assert 0 <= obj["area"] <= decoded.shape[1] * decoded.shape[2]
    assert os.path.getsize(os.path.join(seg_out, "overlay.mp4")) > 0
    assert Image.open(os.path.join(seg_out, "contact_sheet.png")).size[0] > 0


@pytest.mark.slow  # compiles the tiny VIRST twice: the two-program reference and the predictor's one program
def test_the_predictor_encodes_each_frame_once_with_the_two_program_outputs(tokenizer, monkeypatch):
    """Reference: the predictor's previous path, two programs: the model's forward on the SegPrompter's frames
    (SAM2 encodes those 8), then `tdau.segment_with_anchors` on every frame (SAM2 encodes all 10 again). The
    predictor's one program must give the same logits and masks with one SAM2 encoder pass over the 10 frames
    and one Qwen-VL vision pass."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from stvl_jax.infer.virst import VirstSegmenter
    from stvl_jax.models.qwen_vl.vision import VisionTower
    from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig
    from stvl_jax.models.sam2.image_model import Sam2ImageModel
    from stvl_jax.models.sam2.postprocess import masks_from_logits
    from stvl_jax.models.virst import tdau
    from stvl_jax.models.virst.model import init_virst_model

    model = init_virst_model(_tiny_config(), seed=0)
    model.sam2_preprocessing = Sam2PreprocessConfig(image_size=128)
    seg = VirstSegmenter(model, tokenizer)
    frames = np.random.default_rng(0).integers(0, 256, (10, 64, 64, 3), dtype=np.uint8)
    clip = seg.clip_inputs(frames, "the red circle")
    # by hand: the 8 VLM frames of 10 (test above) are all SegPrompter frames (max_seg_frames 8); anchors of 8
    # frames: round(linspace(0, 7, 2)) = 0, 7 -> video frames 0 and 9
    assert clip.seg_indices.tolist() == [0, 1, 3, 4, 5, 6, 8, 9] and clip.anchor_frames == (0, 9)

    encoded, vision = [], []
    image_features, tower = Sam2ImageModel.image_features, VisionTower.__call__

    def counted_features(self, pixel_values):
        encoded.append(pixel_values.shape[0])
        return image_features(self, pixel_values)

    def counted_tower(self, *args, **kwargs):
        vision.append(1)
        return tower(self, *args, **kwargs)

    monkeypatch.setattr(Sam2ImageModel, "image_features", counted_features)
    monkeypatch.setattr(VisionTower, "__call__", counted_tower)

    @nnx.jit
    def forward(model, inputs, pixels):
        return model.forward(inputs, pixels, track=False, compute_logits=False).anchor_prompts

    @nnx.jit
    def track(model, pixels, prompts):
        out = tdau.segment_with_anchors(model.sam2, pixels, clip.anchor_frames, prompts, multimask=True)
        return out.low_res_logits[0], out.object_score_logits[0]

    pixels = jnp.asarray(clip.sam2_pixels)
    prompts = forward(model, jax.tree.map(jnp.asarray, clip.inputs), pixels[clip.seg_indices])
    ref_low, ref_obj = track(model, pixels, prompts[:, np.asarray(clip.keep)])
    assert model.config.anchors.multimask_eval  # the predictor's setting, as the reference's multimask=True
    assert encoded == [8, 10] and len(vision) == 1  # the counters see the reference's double encoding
    encoded.clear()
    vision.clear()

    out = seg.segment(frames, "the red circle")
    assert encoded == [10] and len(vision) == 1
    np.testing.assert_array_equal(out.low_res_logits, np.asarray(ref_low, np.float32))
    np.testing.assert_array_equal(out.object_score_logits, np.asarray(ref_obj, np.float32))
    np.testing.assert_array_equal(out.masks, np.asarray(masks_from_logits(ref_low, 128, 64, 64, 0.0)))
    assert out.masks.shape == (10, 64, 64) and out.anchor_frames == (0, 9)
