"""Prompts simulated from ground-truth masks the way SAM2 trains (sam2 training `prepare_prompt_inputs`).

Per clip: with probability `prob_points` the prompts are clicks, else the ground-truth masks themselves; each
object gets 1..`max_cond_frames` conditioning frames (a random count when `random_cond_frames`): its first
visible frame in the clip, plus random later frames where it is visible (SAM2 takes the clip's first frame and
any later ones; here objects may enter late, and a box on an empty mask would be meaningless). With clicks,
each conditioning slot is a box with probability `prob_box` (shared by the clip's objects, as SAM2 draws it
once per frame), else one point drawn uniformly from the mask. Boxes are SAM2's `sample_box_points`: corners
moved by up to `box_noise` x the box side (at most `box_noise_bound` px), clamped to the frame.

Coordinates are pixels of the mask (x, y), SAM2's convention (integer pixel indices; box corners are the
first and last mask pixel, inclusive); the model rescales them to its input size. A prompt's `points` /
`labels` follow SAM2's point-input format: a box is two points labelled 2 (top-left) and 3 (bottom-right),
clicks are 1 (positive) / 0 (negative). `sample_points` is also the correction-click sampler (from the errors
of a prediction) that SAM2's training loop calls between frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipelines.vos.clips import VosClip
from stvl_jax.errors import ConfigError

BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = 2, 3
KINDS = ("box", "points", "mask")


@dataclass(frozen=True)
class PromptConfig:
    prob_points: float = 0.5  # SAM2 prob_to_use_pt_input_for_train (else mask prompts)
    prob_box: float = 0.5  # SAM2 prob_to_use_box_input_for_train (given clicks)
    max_cond_frames: int = 2  # SAM2 num_init_cond_frames_for_train
    random_cond_frames: bool = True  # SAM2 rand_init_cond_frames_for_train: 1..max
    box_noise: float = 0.1  # fraction of the box side (SAM's default)
    box_noise_bound: float = 20.0  # pixels
    num_points: int = 1  # initial clicks per conditioning frame (SAM2 samples one)

    def __post_init__(self):
        for name in ("prob_points", "prob_box"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"prompt {name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.max_cond_frames < 1 or self.num_points < 1:
            raise ConfigError(f"prompt max_cond_frames and num_points must be >= 1, got {self.max_cond_frames} "
                              f"and {self.num_points}")
        if self.box_noise < 0 or self.box_noise_bound < 0:
            raise ConfigError("prompt box_noise and box_noise_bound must be >= 0")


@dataclass
class Prompt:
    """A prompt of one object on one clip frame. points (P, 2) float32 (x, y); labels (P,) int32;
    box (4,) float32 x0, y0, x1, y1 for box prompts; mask (H, W) bool for mask prompts."""

    object: int  # index into the clip's objects
    frame: int  # clip-relative frame index
    kind: str  # "box" | "points" | "mask"
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (4,) float32 [x0, y0, x1, y1], inclusive pixel indices of the mask's extent."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise ValueError("mask_to_box: empty mask")
    return np.asarray([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def box_prompt(mask: np.ndarray, rng: np.random.Generator | None = None, noise: float = 0.1,
               noise_bound: float = 20.0) -> np.ndarray:
    """Box of a mask, each coordinate moved by U(-1, 1) x min(noise x side, noise_bound) and clamped to the
    frame (SAM2 `sample_box_points`); no rng or noise 0: the exact box."""
    box = mask_to_box(mask)
    if rng is None or noise <= 0:
        return box
    h, w = mask.shape
    bw, bh = box[2] - box[0], box[3] - box[1]
    max_dx, max_dy = min(bw * noise, noise_bound), min(bh * noise, noise_bound)
    box = box + (2 * rng.random(4) - 1) * np.asarray([max_dx, max_dy, max_dx, max_dy])
    return np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)


def sample_points(gt: np.ndarray, pred: np.ndarray | None, rng: np.random.Generator,
                  num: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Clicks from the errors of a prediction (SAM2 `sample_random_points_from_errors`, 'uniform').

    gt, pred (H, W) bool (pred None = empty). Each click independently: uniform over the false-negative pixels
    (label 1) and the false-positive pixels (label 0) together; when the prediction is exactly right, a negative
    click on the background. With pred None this is a positive click uniformly inside the mask. (A correct
    mask that fills the frame leaves no background: a positive click inside it, where SAM2's argmax over an
    all-zero noise map would return pixel (0, 0) as a negative click.)
    Returns points (num, 2) float32 (x, y) and labels (num,) int32.
    """
    gt = np.asarray(gt, bool)
    pred = np.zeros_like(gt) if pred is None else np.asarray(pred, bool)
    fn, fp = gt & ~pred, ~gt & pred
    if not fn.any() and not fp.any():
        fp = ~gt  # all correct: SAM2 clicks a negative point on the background
    # SAM2 takes the argmax of uniform noise over both error maps: a uniform choice among their pixels.
    cand = np.concatenate([np.flatnonzero(fn.ravel()), np.flatnonzero(fp.ravel())])
    if cand.size == 0:  # all correct and no background (a mask filling the frame)
        cand, n_pos = np.flatnonzero(gt.ravel()), gt.size
    else:
        n_pos = int(fn.sum())
    pick = rng.integers(0, cand.size, size=num)
    idx = cand[pick]
    w = gt.shape[1]
    points = np.stack([idx % w, idx // w], axis=1).astype(np.float32)
    return points, (pick < n_pos).astype(np.int32)


def cond_frames(visible: np.ndarray, count: int, rng: np.random.Generator | None) -> list[int]:
    """The first visible frame, then up to count - 1 random later visible frames (sorted)."""
    idx = np.flatnonzero(visible)
    first, rest = int(idx[0]), idx[1:]
    extra = min(count - 1, rest.size)
    if extra <= 0 or rng is None:
        return [first]
    return [first] + sorted(int(k) for k in rng.choice(rest, size=extra, replace=False))


def simulate_prompts(clip: VosClip, rng: np.random.Generator, cfg: PromptConfig = PromptConfig()) -> list[Prompt]:
    """Training prompts for every object of the clip (see the module docstring), seeded by rng."""
    use_points = rng.random() < cfg.prob_points
    n_cond = int(rng.integers(1, cfg.max_cond_frames + 1)) if cfg.random_cond_frames else cfg.max_cond_frames
    slot_box = [rng.random() < cfg.prob_box for _ in range(n_cond)]
    out = []
    for o in range(clip.num_objects):
        visible = clip.masks[o].any(axis=(1, 2))
        for slot, k in enumerate(cond_frames(visible, n_cond, rng)):
            m = clip.masks[o, k]
            if not use_points:
                out.append(Prompt(o, k, "mask", mask=m.copy()))
            elif slot_box[slot]:
                box = box_prompt(m, rng, cfg.box_noise, cfg.box_noise_bound)
                out.append(Prompt(o, k, "box", points=box.reshape(2, 2),
                                  labels=np.asarray([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int32), box=box))
            else:
                pts, labels = sample_points(m, None, rng, cfg.num_points)
                out.append(Prompt(o, k, "points", points=pts, labels=labels))
    return out


def first_frame_box_prompts(clip: VosClip) -> list[Prompt]:
    """Evaluation prompts: one exact box per object on its first visible frame of the clip."""
    out = []
    for o in range(clip.num_objects):
        k = int(clip.first_visible[o])
        box = mask_to_box(clip.masks[o, k])
        out.append(Prompt(o, k, "box", points=box.reshape(2, 2),
                          labels=np.asarray([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int32), box=box))
    return out
