"""`stvl convert verify` for SAM2: transformers and stvl-jax on the same synthetic image and prompts, fp32.

The sample comes from the config alone: one image of N(0, 1) pixel values at the model's input size, prompted
with two prompt sets, each a box plus a positive and a negative point, with multimask output. Compared: the
low-res mask logits (`pred_masks`), IoU scores and object-score logits; the report gives the largest |Δ| of
each. `sam2` checkpoints run transformers' `Sam2Model`; `sam2_video` ones run a `Sam2Model` holding the video
checkpoint's image-path tensors, against the image part of our video model; then its tracking path
(`converters.sam2_verify_video`, when this build has the tracker; the report says when it has not).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from stvl_jax.errors import CheckpointError

DEFAULT_ATOL = 1e-3  # fp32 vs fp32: a wrong tensor moves logits by O(1), numerics by ~1e-5


@dataclasses.dataclass(frozen=True)
class Sam2VerifyReport:
    family: str
    mask_logits: float  # max |Δ| of the low-res mask logits
    iou_scores: float
    object_scores: float
    masks: int  # low-res masks compared
    tracking: object | None = None  # sam2_video: `sam2_verify_video.TrackingReport`
    note: str = ""  # what was not compared, and why

    @property
    def max_abs_diff(self) -> float:
        return max(self.mask_logits, self.iou_scores, self.object_scores)

    def ok(self, atol: float = DEFAULT_ATOL) -> bool:
        image = bool(self.max_abs_diff <= atol)  # NaN compares False: not OK
        return image and (self.tracking is None or self.tracking.ok())

    def describe(self) -> str:
        text = (f"SAM2 ({self.family}) image path, {self.masks} low-res masks: max |Δ mask logit| "
                f"{self.mask_logits:.3e}, |Δ IoU| {self.iou_scores:.3e}, |Δ object score| {self.object_scores:.3e}")
        if self.tracking is not None:
            text += f"; {self.tracking.describe()}"
        return text + (f"; {self.note}" if self.note else "")


def synthetic_prompts(image_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of one call in HF layouts: pixel_values (1, 3, S, S) ~ N(0, 1), and two prompt sets, each a box
    (input_boxes (1, 2, 4)) plus a positive and a negative point (input_points (1, 2, 2, 2), input_labels
    (1, 2, 2)); coordinates in pixels of the S x S input."""
    rng = np.random.default_rng(seed)
    s = float(image_size)
    pixels = rng.standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    boxes = np.array([[[0.1, 0.2, 0.6, 0.7], [0.45, 0.3, 0.95, 0.9]]], np.float32) * s
    points = np.array([[[[0.3, 0.4], [0.55, 0.65]], [[0.7, 0.6], [0.5, 0.35]]]], np.float32) * s
    return dict(pixel_values=pixels, input_boxes=boxes, input_points=points,
                input_labels=np.array([[[1, 0], [1, 0]]], np.int64))


def _our_image_model(model, family: str):
    """The `Sam2ImageModel` that runs the image path of a loaded model."""
    if family == "sam2":
        return model
    return model.image  # Sam2VideoModel: its `Sam2ImageModel`


def _transformers_image_model(hf_dir, hf_config, family: str):
    """transformers' `Sam2Model` (eager attention, fp32, eval) with the checkpoint's image-path weights: the
    directory itself for `sam2`; for `sam2_video`, a `Sam2Model` of the config's image sections strictly loaded
    with those tensors of the video checkpoint (`Sam2VideoModel`'s single-frame path also selects the best mask
    and blanks frames without an object, which would hide the raw logits this compares)."""
    import torch
    import transformers

    from converters.hf_checkpoint import HFCheckpoint

    if family == "sam2":
        return transformers.Sam2Model.from_pretrained(str(hf_dir), dtype=torch.float32,
                                                      attn_implementation="eager").eval()
    image = {k: hf_config[k] for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config")
             if k in hf_config}
    model = transformers.Sam2Model._from_config(transformers.Sam2Config(**image), attn_implementation="eager")
    with HFCheckpoint(hf_dir) as ck:
        state = {n: torch.from_numpy(np.ascontiguousarray(ck.get(n)).astype(np.float32))
                 for n in model.state_dict() if n in ck.names}
    model.load_state_dict(state, strict=True)
    return model.float().eval()


def verify_sam2(hf_dir: str | Path, ckpt: str | Path, *, seed: int = 0, track: bool = True) -> Sam2VerifyReport:
    """Load both sides in fp32 and compare on `synthetic_prompts`; a `sam2_video` checkpoint's tracking path too
    (`sam2_verify_video`, unless `track` is off). Needs torch + transformers."""
    try:
        import torch
        import transformers  # noqa: F401 - checked here, used by _transformers_image_model
    except ImportError:
        raise CheckpointError("verify runs transformers on PyTorch: pip install 'stvl-jax[torch]'") from None
    import jax.numpy as jnp
    from flax import nnx

    from converters.hf_checkpoint import HFCheckpoint
    from converters.sam2_convert import config_from_hf, family_of_hf
    from stvl_jax.models.sam2.loading import load_model

    with HFCheckpoint(hf_dir) as ck:
        hf_config = ck.config()
    family = family_of_hf(hf_config, f"{str(hf_dir)!r} config.json")
    ours = load_model(ckpt, dtype=jnp.float32, param_dtype=jnp.float32)
    if ours.family != family:
        raise CheckpointError(f"{str(hf_dir)!r} is {family} but {str(ckpt)!r} is {ours.family}")
    if config_from_hf(family, hf_config) != ours.config:
        raise CheckpointError(f"{str(hf_dir)!r} and {str(ckpt)!r} describe different SAM2 models (configs differ)")
    image_model = _our_image_model(ours, family)
    hf_model = _transformers_image_model(hf_dir, hf_config, family)
    diffs = {"pred_masks": 0.0, "iou_scores": 0.0, "object_score_logits": 0.0}
    size = image_model.config.vision.backbone.image_size[0]
    forward = nnx.jit(lambda m, kw: m(**kw, multimask_output=True))  # one dispatch instead of thousands
    inputs = synthetic_prompts(size, seed)
    with torch.no_grad():
        ref = hf_model(**{k: torch.from_numpy(v) for k, v in inputs.items()}, multimask_output=True)
    got = forward(image_model, {k: jnp.asarray(v) for k, v in inputs.items()})
    for name in diffs:
        a = ref[name].numpy().astype(np.float64)
        b = np.asarray(getattr(got, name), np.float64)
        if a.shape != b.shape:
            raise CheckpointError(f"{name} shapes differ: transformers {a.shape}, ours {b.shape}")
        diffs[name] = float(np.abs(a - b).max()) if np.isfinite(b).all() else float("inf")
    masks = int(np.prod(ref["pred_masks"].shape[:3]))
    tracking, note = None, ""
    if family == "sam2_video" and track:
        import importlib.util

        if importlib.util.find_spec("stvl_jax.models.sam2.tracker") is None:
            note = "tracking path not compared: this build has no SAM2 tracker (stvl_jax.models.sam2.tracker)"
        else:
            from converters.sam2_verify_video import verify_tracking

            tracking = verify_tracking(hf_dir, ours, seed=seed)
    return Sam2VerifyReport(family, diffs["pred_masks"], diffs["iou_scores"], diffs["object_score_logits"], masks,
                            tracking, note)
