"""SAM2 video tracking of box prompts (PyTorch, imported lazily): two interchangeable backends.

`track(frames (T, H, W, 3) uint8, boxes (N, 4) xyxy) -> TrackOutput`: the N boxes prompt N objects on frame 0,
propagated to frame T - 1. The generator calls it on the anchor..end frames and on the reversed start..anchor
frames, as Strefer runs its forward and backward videos.
- `MetaSam2Tracker`: Meta's `sam2` package (`build_sam2_video_predictor`; a Meta .pt loaded with weights_only,
  or random weights). Frames are handed over in memory (Meta's own resize: PIL bicubic) instead of a JPEG dir.
- `HfSam2Tracker`: transformers `Sam2VideoModel` + `Sam2VideoInferenceSession` (float32) from an HF directory,
  frames resized as transformers' processor does (`stvl_jax.models.sam2.host.preprocess`, bit-identical).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

import numpy as np

from data_pipelines.strefer.masklets.config import TrackerConfig
from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.sam2.host.preprocess import IMAGENET_MEAN, IMAGENET_STD, Sam2PreprocessConfig, preprocess_frames


@dataclass
class TrackOutput:
    """masks (T, N, H, W) bool at the frames' resolution; scores (T, N) float32 SAM2 object-score logits
    (> 0: the object is judged present; SAM2 empties the mask where it is not)."""

    masks: np.ndarray
    scores: np.ndarray


def _upsample(logits, height: int, width: int, threshold: float) -> np.ndarray:
    """(N, 1, h, w) torch logits -> (N, H, W) bool, bilinear (align_corners=False) as both SAM2 codes do."""
    import torch.nn.functional as F

    if logits.shape[-2:] != (height, width):
        logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    return (logits[:, 0] > threshold).cpu().numpy()


class MetaSam2Tracker:
    _init_lock = threading.Lock()  # init_state is fed through a patched module function (see track)

    def __init__(self, cfg: TrackerConfig):
        import torch
        from sam2.build_sam import build_sam2_video_predictor

        if cfg.path is not None and not os.path.isfile(cfg.path):
            raise CheckpointError(f"SAM2 checkpoint {cfg.path!r} does not exist (expected a Meta .pt file)")
        from hydra.errors import HydraException

        try:
            self.predictor = build_sam2_video_predictor(cfg.model_config, ckpt_path=cfg.path, device=cfg.device,
                                                        hydra_overrides_extra=list(cfg.model_overrides))
        except HydraException as e:
            raise ConfigError(f"SAM2 model config {cfg.model_config!r} with overrides {list(cfg.model_overrides)}: "
                              f"{str(e).splitlines()[0]}") from None
        except RuntimeError:  # sam2 logs the missing/unexpected keys, then raises a bare RuntimeError
            raise CheckpointError(f"SAM2 checkpoint {cfg.path!r} does not fit {cfg.model_config!r} (missing or "
                                  "unexpected keys)") from None
        self.cfg = cfg
        self.pre = Sam2PreprocessConfig(image_size=self.predictor.image_size, resample="pil_bicubic")
        self._torch = torch

    def track(self, frames: np.ndarray, boxes: np.ndarray) -> TrackOutput:
        from unittest import mock

        import sam2.sam2_video_predictor as svp

        torch = self._torch
        t, h, w = frames.shape[:3]
        images = torch.from_numpy(preprocess_frames(frames, self.pre)).to(self.cfg.device)
        p = self.predictor
        # Meta's init_state only reads a JPEG folder or an mp4 from disk; hand it the frames in memory instead
        # (no JPEG re-encoding, unlike Strefer's temp folders)
        with self._init_lock, mock.patch.object(svp, "load_video_frames", lambda **_: (images, h, w)):
            state = p.init_state(video_path="<in-memory>")
        for i, box in enumerate(boxes):
            p.add_new_points_or_box(state, frame_idx=0, obj_id=i + 1, box=np.asarray(box, np.float32))
        masks = np.zeros((t, len(boxes), h, w), bool)
        scores = np.full((t, len(boxes)), -np.inf, np.float32)
        # no per-clip progress bar in worker logs (a concurrent thread's patch can only leave the quiet one)
        with mock.patch.object(svp, "tqdm", lambda it, **_: it):
            for k, obj_ids, video_res_masks in p.propagate_in_video(state):
                for j, obj_id in enumerate(obj_ids):
                    o = state["obj_id_to_idx"][obj_id]
                    per_obj = state["output_dict_per_obj"][o]
                    out = per_obj["cond_frame_outputs"].get(k) or per_obj["non_cond_frame_outputs"][k]
                    scores[k, o] = float(out["object_score_logits"].reshape(-1)[0])
                    masks[k, o] = (video_res_masks[j, 0] > self.cfg.mask_threshold).cpu().numpy()
        return TrackOutput(masks, scores)


def _hf_preprocessing(path: str, image_size: int) -> Sam2PreprocessConfig:
    """Mean/std from the directory's (video) processor file when it has one; the model's input size."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        f = os.path.join(path, name)
        if os.path.isfile(f):
            with open(f) as fh:
                d = json.load(fh)
            mean, std = tuple(d.get("image_mean", mean)), tuple(d.get("image_std", std))
            break
    return Sam2PreprocessConfig(image_size=image_size, mean=mean, std=std)


class HfSam2Tracker:
    def __init__(self, cfg: TrackerConfig):
        import torch
        from transformers import Sam2VideoModel

        if not os.path.isfile(os.path.join(cfg.path, "config.json")):
            raise CheckpointError(f"SAM2 directory {cfg.path!r} has no config.json (expected an HF Sam2Video "
                                  "directory, e.g. from `stvl convert export`)")
        self.model = Sam2VideoModel.from_pretrained(cfg.path, dtype=torch.float32).to(cfg.device).eval()
        self.cfg = cfg
        self.pre = _hf_preprocessing(cfg.path, int(self.model.config.image_size))
        self._torch = torch

    def track(self, frames: np.ndarray, boxes: np.ndarray) -> TrackOutput:
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        torch = self._torch
        t, h, w = frames.shape[:3]
        s = self.pre.image_size
        pixels = torch.from_numpy(preprocess_frames(frames, self.pre))
        session = Sam2VideoInferenceSession(video=pixels, video_height=h, video_width=w, dtype=torch.float32,
                                            inference_device=self.cfg.device)
        obj_ids = list(range(1, len(boxes) + 1))
        for obj_id, box in zip(obj_ids, boxes):
            # as the processor does: corners scaled to the model's input size, labelled 2 (top-left), 3 (bottom-right)
            corners = np.asarray(box, np.float32).reshape(2, 2) * np.float32([s / w, s / h])
            idx = session.obj_id_to_idx(obj_id)
            session.add_point_inputs(idx, 0, {"point_coords": torch.from_numpy(corners)[None, None],
                                              "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)})
            session.remove_mask_inputs(idx, 0)
        session.obj_with_new_inputs = obj_ids
        masks = np.zeros((t, len(boxes), h, w), bool)
        scores = np.full((t, len(boxes)), -np.inf, np.float32)

        def record(o):
            cols = [session.obj_id_to_idx(i) for i in o.object_ids]
            masks[o.frame_idx, cols] = _upsample(o.pred_masks, h, w, self.cfg.mask_threshold)
            scores[o.frame_idx, cols] = o.object_score_logits.reshape(-1).float().cpu().numpy()

        with torch.no_grad():
            record(self.model(inference_session=session, frame_idx=0))
            for o in self.model.propagate_in_video_iterator(session, start_frame_idx=0):
                record(o)
        return TrackOutput(masks, scores)


def build_tracker(cfg: TrackerConfig):
    return {"sam2": MetaSam2Tracker, "hf": HfSam2Tracker}[cfg.backend](cfg)
