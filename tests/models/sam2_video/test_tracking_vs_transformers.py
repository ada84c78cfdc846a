"""Video tracking vs transformers' `Sam2VideoModel` + `Sam2VideoInferenceSession` (fp32, CPU), tiny random model:
8 frames of random pixels, object 1 clicked on frame 2 (one point: multimask), object 2 boxed on frame 5 (box =
points labelled 2, 3: single mask, dynamic multimask), each prompted frame run as HF's `model(session, frame)`,
then propagation forward (from the first prompted frame) and in reverse from the last frame. Every yielded
frame: low-res logits <= 1e-4, identical binarised masks, object score logits <= 1e-4. A second scenario puts a
mask prompt on frame 1 (`_use_mask_as_output`) and clicks (positive + negative) on frame 4; a third a correction
click on an already tracked frame between two propagations.

Memory storage: HF (and Meta) round every encoded memory to bf16. fp32 differences of ~1e-6 then flip an
element by one bf16 ulp (2^-8 relative) now and then, which moves later frames' logits by ~1e-4: the 1e-4
comparison runs with the storage in fp32 on both sides (HF's one bf16 cast in `_encode_new_memory` patched to
fp32, ours `bank_dtype=float32`); the shipped bf16 storage (both sides bf16) is compared on binarised masks."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from stvl_jax.models.sam2.tracker import Prompt, Tracker  # noqa: E402
from video_helpers import IMAGE, flax_video_model, hf_fp32_memory, torch_video_model  # noqa: E402

T = 8
TOL = 1e-4


def _pixels(seed):
    return np.random.default_rng(seed).normal(size=(T, 3, IMAGE, IMAGE)).astype(np.float32)


@pytest.fixture
def fp32_memory(monkeypatch):
    return hf_fp32_memory(monkeypatch)


def _hf_run(pixels, steps, passes):
    """steps: [(frame, obj_id, ("points", coords, labels) | ("box", xyxy, None) | ("mask", mask, None))];
    passes: [(reverse, start)]: all prompts, then the passes."""
    return _hf_actions(pixels, [("prompt", *s) for s in steps] + [("propagate", *p) for p in passes])


def _hf_actions(pixels, actions):
    """actions: ("prompt", frame, obj_id, prompt) runs `model(session, frame)` after adding it; ("propagate",
    reverse, start) runs `propagate_in_video_iterator`. Returns [(frame, low (O, 16, 16), scores (O,), ids)]."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    model = torch_video_model()
    session = Sam2VideoInferenceSession(video=torch.from_numpy(pixels), video_height=IMAGE, video_width=IMAGE,
                                        dtype=torch.float32)
    outs = []

    def record(o):
        outs.append((o.frame_idx, o.pred_masks.numpy().reshape(len(o.object_ids), IMAGE // 4, IMAGE // 4),
                     o.object_score_logits.numpy().reshape(-1), list(o.object_ids)))

    with torch.no_grad():
        for action in actions:
            if action[0] == "propagate":
                for o in model.propagate_in_video_iterator(session, start_frame_idx=action[2], reverse=action[1]):
                    record(o)
                continue
            _, frame, obj, prompt = action
            idx = session.obj_id_to_idx(obj)
            if prompt[0] == "box":  # as HF's processor: the two corners labelled 2, 3
                prompt = ("points", np.reshape(prompt[1], (2, 2)).tolist(), [2, 3])
            if prompt[0] == "points":
                session.add_point_inputs(idx, frame, {
                    "point_coords": torch.tensor(prompt[1], dtype=torch.float32)[None, None],
                    "point_labels": torch.tensor(prompt[2], dtype=torch.int32)[None, None]})
                session.remove_mask_inputs(idx, frame)
            else:
                session.add_mask_inputs(idx, frame, torch.tensor(prompt[1], dtype=torch.float32)[None, None])
                session.remove_point_inputs(idx, frame)
            session.obj_with_new_inputs = [obj]
            record(model(inference_session=session, frame_idx=frame))
    return outs


def _ours_run(pixels, steps, passes, object_ids, bank_dtype, compact_memory=False):
    return _ours_actions(pixels, [("prompt", *s) for s in steps] + [("propagate", *p) for p in passes], object_ids,
                         bank_dtype, compact_memory)


def _ours_actions(pixels, actions, object_ids, bank_dtype, compact_memory=False):
    tracker = Tracker(flax_video_model(), pixels, object_ids, cond_capacity=2, bank_dtype=bank_dtype,
                      compact_memory=compact_memory)
    outs = []
    for action in actions:
        if action[0] == "propagate":
            outs.extend(tracker.propagate(reverse=action[1], start_frame=action[2]))
            continue
        _, frame, obj, (kind, value, labels) = action
        p = {"points": lambda: Prompt(points=value, labels=labels), "box": lambda: Prompt(box=value),
             "mask": lambda: Prompt(mask=value)}[kind]()
        low, scores = tracker.add_prompts(frame, {obj: p})
        outs.append((frame, low, scores))
    return outs


def _compare(ref, ours, object_ids, logits: bool = True):
    assert [r[0] for r in ref] == [o[0] for o in ours]
    for (frame, r_low, r_scores, r_ids), (_, o_low, o_scores) in zip(ref, ours):
        cols = [object_ids.index(i) for i in r_ids]  # HF lists the objects registered so far
        o_low, o_scores = o_low[cols], o_scores[cols]
        assert np.array_equal(o_low > 0, r_low > 0), frame
        assert np.array_equal(o_scores > 0, r_scores > 0), frame
        if logits:
            assert np.abs(o_low - r_low).max() <= TOL, (frame, np.abs(o_low - r_low).max())
            assert np.abs(o_scores - r_scores).max() <= TOL, (frame, o_scores, r_scores)


STEPS_A = [(2, 1, ("points", [[20.0, 30.0]], [1])), (5, 2, ("box", [10.0, 12.0, 40.0, 50.0], None))]
PASSES_A = [(False, None), (True, T - 1)]


def test_points_and_box_on_two_frames_forward_then_reverse(fp32_memory):
    pixels = _pixels(0)
    ref = _hf_run(pixels, STEPS_A, PASSES_A)
    assert len(ref) == 2 + 6 + T
    _compare(ref, _ours_run(pixels, STEPS_A, PASSES_A, [1, 2], fp32_memory), [1, 2])


def test_mask_prompt_and_clicks(fp32_memory):
    pixels = _pixels(1)
    mask = np.zeros((IMAGE, IMAGE), np.float32)
    mask[10:40, 20:50] = 1
    steps = [(1, 7, ("mask", mask, None)), (4, 3, ("points", [[30.0, 30.0], [5.0, 60.0]], [1, 0]))]
    passes = [(False, None), (True, None)]
    _compare(_hf_run(pixels, steps, passes), _ours_run(pixels, steps, passes, [3, 7], fp32_memory), [3, 7])


@pytest.mark.slow  # one compilation of the tracking step per memory-slot count
def test_compact_memory_matches_transformers(fp32_memory):
    """compact_memory (attend only to as many slots as can be filled): the same outputs, two objects, prompts on
    two frames, forward then reverse (slot counts growing from 1 to the capacity)."""
    pixels = _pixels(0)
    ref = _hf_run(pixels, STEPS_A, PASSES_A)
    _compare(ref, _ours_run(pixels, STEPS_A, PASSES_A, [1, 2], fp32_memory, compact_memory=True), [1, 2])


@pytest.mark.slow  # ~60 s: one more object count, so every step compiles again
def test_correction_click_on_a_tracked_frame(fp32_memory):
    """A negative click added on a frame already tracked (HF: not an initial conditioning frame, so memory
    attention, and stored as a tracked frame), then propagation again."""
    pixels = _pixels(3)
    actions = [("prompt", 1, 5, ("points", [[22.0, 40.0]], [1])), ("propagate", False, None),
               ("prompt", 4, 5, ("points", [[50.0, 12.0]], [0])), ("propagate", False, None)]
    ref = _hf_actions(pixels, actions)
    assert [r[0] for r in ref] == [1] + list(range(1, T)) + [4] + list(range(1, T))
    _compare(ref, _ours_actions(pixels, actions, [5], fp32_memory), [5])


@pytest.mark.slow  # ~45 s: a second compile of every step for the bf16 banks
def test_bf16_memory_as_shipped_gives_the_same_masks():
    pixels = _pixels(0)
    ref = _hf_run(pixels, STEPS_A, PASSES_A)
    _compare(ref, _ours_run(pixels, STEPS_A, PASSES_A, [1, 2], jnp.bfloat16), [1, 2], logits=False)
