"""VIRST inference: a checkpoint + a video + a referring expression -> one mask per frame.

    predict = load_predictor("runs/virst_tiny/final")        # what `stvl eval rvos` and `stvl segment --query` run
    masks = predict(frames, "the red circle that enters last")  # frames (T, H, W, 3) uint8 -> (T, H, W) bool
    seg = VirstSegmenter(model, tokenizer); out = seg.segment(frames, text, times)  # + scores, low-res logits

As VIRST evaluates (`eval.py`, `video_propagate`):
- the video LLM sees `vlm_frames` frames (8, VIRST's evaluation), the middle frame of each of that many equal
  spans of the video (a shorter video repeats frames), with the checkpoint's Qwen-VL preprocessing; the first
  T_seg = min(vlm_frames, anchors.max_seg_frames) of them are the SegPrompter's frames (all of them by default);
- the prompt is teacher-forced: user "Reference Video: <video> \\n" + question template, assistant answer
  template with its [SEG] tokens (`host/prompts.py`; the first template of each, no randomness);
- SAM2 tracks EVERY frame of the video: the anchors `tdau.anchor_frames_for(T_seg)` mapped to the video frames
  they came from get the decoded prompts, the other frames propagate (multimask + IoU selection);
- masks: SAM2's low-res logits upsampled to the video's size (`sam2.postprocess`), > the checkpoint's threshold.

One device program per clip (`_segment`): SAM2's image encoder runs once over every frame; the SegPrompter reads
the rows of its T_seg frames, the tracker all of them.

Shapes under jit are static per (video length, frame size, prompt length): the prompt is right-padded to a
multiple of 32 tokens so expressions of similar length share one compile; another video length compiles again.
Qwen3-VL's `<t seconds>` stamps use `times` (default: frame index / `fps`, fps 1 when the caller has none).
"""

from __future__ import annotations

import dataclasses
import random

import jax
import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import InputError

PROMPT_MULTIPLE = 32  # prompt lengths are padded to a multiple of this (fewer compiles)
VLM_FRAMES = 8  # VIRST's evaluation samples 8 frames for the video LLM (eval.py: num_frames_sample_range "8,8")


@dataclasses.dataclass(frozen=True)
class VirstSegmentation:
    masks: np.ndarray  # (T, H, W) bool at the video's size
    object_score_logits: np.ndarray  # (T,) SAM2's object score per frame
    low_res_logits: np.ndarray  # (T, S/4, S/4) float32 before upsampling
    vlm_indices: np.ndarray  # (F,) the video frames the LLM saw
    anchor_frames: tuple[int, ...]  # video frames that got the decoded prompts


def vlm_frame_indices(num_frames: int, count: int) -> np.ndarray:
    """The middle frame of each of `count` equal spans of a `num_frames` video -> (count,) int64, non-decreasing
    (a shorter video repeats frames)."""
    return np.minimum(((np.arange(count) + 0.5) * num_frames / count).astype(np.int64), num_frames - 1)


class _FirstTemplate(random.Random):
    """An rng for `host/prompts.py` that picks the first template of each list: deterministic prompts."""

    def choice(self, seq):
        return seq[0]


def virst_prompt(tokenizer, vision, grid, times, expression: str, seg_count: int, seg_text: str) -> np.ndarray:
    """The teacher-forced conversation (module docstring), first templates -> input_ids (L,) int32."""
    from data_pipelines.grain.rvos import virst_conversation

    ids, _ = virst_conversation(tokenizer, expression, grid, times, family=vision.family, merge=vision.merge_size,
                                temporal=vision.temporal_patch_size, seg_count=seg_count, seg_text=seg_text,
                                rng=_FirstTemplate())
    return ids


def _segment(model, inputs, pixels, seg_idx, keep: tuple[int, ...], anchor_frames: tuple[int, ...]):
    """One program per clip: SAM2's image encoder runs ONCE over every frame (T, 3, S, S); the fusion reads the
    rows of the segmentation frames `seg_idx` (T_seg,), the tracker all of them. keep (static): the anchors whose
    prompts are used, anchor_frames (static) their video frames. -> (low-res logits (T, S/4, S/4), object
    scores (T,))."""
    from stvl_jax.models.sam2.tracker_step import frame_features

    feats = frame_features(model.sam2, pixels)
    out = model.forward(inputs, pixels[seg_idx], track=False, compute_logits=False,
                        features=tuple(f[seg_idx] for f in feats))
    return _track(model.sam2, model.config, pixels, anchor_frames, out.anchor_prompts[:, np.asarray(keep)], feats)


def _track(sam2, config, pixels, anchor_frames: tuple[int, ...], prompts, features=None):
    """The evaluation's SAM2 pass over every frame (anchors prompted by `prompts` (1, A, Q, C)), decoding as
    `config.anchors.multimask_eval` says. -> (low-res logits (T, S/4, S/4), object scores (T,))."""
    from stvl_jax.models.virst import tdau

    # the evaluation's order and rules whichever mask is decoded (multimask=False alone means VIRST's training)
    tracked = tdau.segment_with_anchors(sam2, pixels, anchor_frames, prompts, multimask=config.anchors.multimask_eval,
                                        training=False, features=features)
    return tracked.low_res_logits[0], tracked.object_score_logits[0]


@dataclasses.dataclass(frozen=True)
class ClipInputs:
    """What `VirstSegmenter.segment` feeds its device program for one clip (host side, numpy)."""

    inputs: object  # ModelInputs of the teacher-forced prompt (one row)
    sam2_pixels: np.ndarray  # (T, 3, S, S) every frame, SAM2-preprocessed
    vlm_indices: np.ndarray  # (F,) the video frames the LLM sees
    seg_indices: np.ndarray  # (T_seg,) the first T_seg of them: the SegPrompter's frames
    keep: tuple[int, ...]  # anchors kept (a short video can map two anchors to one frame: the first stays)
    anchor_frames: tuple[int, ...]  # video frames of the kept anchors


class VirstSegmenter:
    """A loaded VirstModel + its tokenizer -> `segment(frames, expression, times)`; jitted programs are cached."""

    def __init__(self, model, tokenizer, *, vlm_frames: int = VLM_FRAMES):
        from flax import nnx

        cfg = model.config
        seg_id = tokenizer.convert_tokens_to_ids(cfg.seg.text)
        if seg_id != cfg.seg.token_id:
            raise InputError(f"the tokenizer maps {cfg.seg.text!r} to id {seg_id}, the checkpoint's [SEG] row is "
                             f"{cfg.seg.token_id}: use the tokenizer saved with the checkpoint (CKPT/tokenizer)")
        self.model, self.tokenizer, self.vlm_frames = model, tokenizer, vlm_frames
        self.vision, self.sam2_pre = model.llm.preprocessing, model.sam2_preprocessing
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._segment = nnx.jit(_segment, static_argnums=(4, 5))

    def clip_inputs(self, frames: np.ndarray, expression: str, times=None, *, fps: float = 1.0) -> ClipInputs:
        """The host side of `segment`: frame choice, Qwen-VL and SAM2 preprocessing, the prompt, the anchors."""
        from stvl_jax.models.qwen_vl.host.preprocess import process_video
        from stvl_jax.models.sam2.host.preprocess import preprocess_frames
        from stvl_jax.models.virst.tdau import anchor_frames_for

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise InputError(f"frames have shape {frames.shape} {frames.dtype}; expected (T >= 1, H, W, 3) uint8")
        if not isinstance(expression, str) or not expression.strip():
            raise InputError(f"the expression is empty ({expression!r}); give the sentence naming the object")
        cfg = self.model.config
        t = len(frames)
        times = np.arange(t) / fps if times is None else np.asarray(times, np.float64)
        idx = vlm_frame_indices(t, self.vlm_frames)
        pv, grid = process_video(frames[idx], self.vision)
        t_seg = min(len(idx), cfg.anchors.max_seg_frames)
        ids = virst_prompt(self.tokenizer, self.vision, grid[0], times[idx], expression, self.model.seg_count(t_seg),
                           cfg.seg.text)
        length = -(-len(ids) // PROMPT_MULTIPLE) * PROMPT_MULTIPLE
        input_ids = np.full((1, length), self.pad_id, np.int64)
        mask = np.zeros((1, length), np.int64)
        input_ids[0, :len(ids)], mask[0, :len(ids)] = ids, 1
        inputs, _ = self.model.llm.prepare({"input_ids": input_ids, "attention_mask": mask,
                                            "pixel_values_videos": pv, "video_grid_thw": grid})
        seg_idx = idx[:t_seg]
        # anchors -> the video frames they came from; a short video can map two anchors to one frame: keep the first
        anchors = [int(seg_idx[a]) for a in anchor_frames_for(t_seg)]
        keep = tuple(k for k, f in enumerate(anchors) if f not in anchors[:k])
        return ClipInputs(inputs, preprocess_frames(frames, self.sam2_pre), idx, seg_idx, keep,
                          tuple(anchors[k] for k in keep))

    def segment(self, frames: np.ndarray, expression: str, times=None, *, fps: float = 1.0) -> VirstSegmentation:
        """frames (T, H, W, 3) uint8, times (T,) seconds (None: index / fps) -> every frame's mask (one device
        program: SAM2 encodes each frame once, module docstring)."""
        from stvl_jax.models.sam2.postprocess import masks_from_logits

        clip = self.clip_inputs(frames, expression, times, fps=fps)
        h, w = np.shape(frames)[1:3]
        low, obj = self._segment(self.model, jax.tree.map(jnp.asarray, clip.inputs), jnp.asarray(clip.sam2_pixels),
                                 jnp.asarray(clip.seg_indices), clip.keep, clip.anchor_frames)
        masks = masks_from_logits(low, self.model.config.sam2.image_size, h, w, self.sam2_pre.mask_threshold)
        return VirstSegmentation(np.asarray(masks), np.asarray(obj, np.float32), np.asarray(low, np.float32),
                                 clip.vlm_indices, clip.anchor_frames)


def load_virst(ckpt: str, *, tokenizer: str | None = None):
    """(VirstModel, tokenizer) of an stvl-jax VIRST checkpoint; anything else is one InputError naming it."""
    import os

    import stvl_jax
    from data_pipelines.tokenizer import open_tokenizer
    from stvl_jax.models.qwen_vl.checkpoints import tokenizer_dir
    from stvl_jax.models.sam2.loading import stvl_format
    from stvl_jax.models.virst.checkpoint import FORMAT

    if not os.path.exists(ckpt):
        raise InputError(f"checkpoint {ckpt!r} does not exist")
    fmt = stvl_format(ckpt) if os.path.isdir(ckpt) else None
    if fmt != FORMAT:
        what = f"a {fmt.split('/')[-1]} checkpoint" if fmt else "not an stvl-jax checkpoint"
        raise InputError(f"checkpoint {ckpt!r} is {what}, not VIRST ({FORMAT}); train one with "
                         "`stvl train configs/train/virst_tiny.yaml`")
    model = stvl_jax.load_model(ckpt)
    return model, open_tokenizer(tokenizer or tokenizer_dir(ckpt), f"tokenizer of {ckpt!r}")


def load_predictor(ckpt: str, *, tokenizer: str | None = None, vlm_frames: int = VLM_FRAMES):
    """`predict(frames (T, H, W, 3) uint8, expression: str) -> (T, H, W) bool` of a VIRST checkpoint (the
    predictor `stvl eval rvos` scores)."""
    model, tok = load_virst(ckpt, tokenizer=tokenizer)
    seg = VirstSegmenter(model, tok, vlm_frames=vlm_frames)

    def predict(frames: np.ndarray, expression: str) -> np.ndarray:
        return seg.segment(frames, expression).masks

    predict.segmenter = seg
    return predict
