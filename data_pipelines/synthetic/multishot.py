"""Multi-shot videos for shot-detection tests: consecutive synthetic scenes joined by hard cuts.

A multi-shot video re-renders the scenes of existing set indices (same seed, so the same pixels as their own
videos) and concatenates them; its annotation records where each shot starts (the ground truth cuts) and which
single-shot annotation describes it:

    {"schema": "stvl-synth-multishot/1", "vid", "video", "fps", "num_frames", "width", "height",
     "cuts": [first frame of shots 2..n],
     "shots": [{"vid": "synth_00001", "start_frame": 0, "num_frames": 56,
                "annotation": "synth_00001.json"}, ...]}

Paths are relative to the annotation file's directory, as in the single-shot set. The single-shot videos never
change (multi-shot ones are extra files under a separate name).
"""

from __future__ import annotations

import json
import os

import numpy as np

from data_pipelines.synthetic.generate import SynthConfig, video_id
from stvl_jax.errors import ConfigError

SCHEMA = "stvl-synth-multishot/1"


def multishot_id(indices) -> str:
    return "multishot_" + "_".join(f"{i:05d}" for i in indices)


# Backgrounds of consecutive shots (cycled): the set's dark grey, then a dark blue and a dark green tint.
SHOT_BACKGROUNDS = ((24, 24, 24), (20, 40, 110), (30, 90, 40))


def write_multishot(out_dir: str, cfg: SynthConfig, indices) -> dict:
    """Write videos/<id>.mp4 + annotations/<id>.json joining the scenes of `indices` (>= 2) -> annotation.

    The single-shot scenes share one dark background and a few small shapes, which a content detector hardly sees
    change (PySceneDetect's ContentDetector at its default threshold 27 finds no cut between them); consecutive
    shots are therefore drawn on different backgrounds (`SHOT_BACKGROUNDS`), as a real cut changes the whole
    frame. Entity colours and masks are unchanged, so each shot's single-shot ground truth still holds."""
    from data_pipelines.synthetic.render import render_frame, write_mp4
    from data_pipelines.synthetic.scene import sample_scene

    indices = [int(i) for i in indices]
    if len(indices) < 2:
        raise ConfigError(f"a multi-shot video joins at least two scenes, got indices {indices}")
    frames, shots, fps, size = [], [], None, None
    for s, index in enumerate(indices):
        scene = sample_scene(np.random.default_rng(np.random.SeedSequence([cfg.seed, index, 0])), cfg.scene)
        fps, size = scene.fps, (scene.height, scene.width)
        bg = np.asarray(SHOT_BACKGROUNDS[s % len(SHOT_BACKGROUNDS)], dtype=np.uint8)
        shots.append({"vid": video_id(index), "start_frame": len(frames), "num_frames": scene.num_frames,
                      "annotation": video_id(index) + ".json", "background": [int(v) for v in bg]})
        for k in range(scene.num_frames):
            rgb, ids = render_frame(scene, k)
            rgb = rgb.copy()
            rgb[ids == 0] = bg
            frames.append(rgb)
    vid = multishot_id(indices)
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    write_mp4(os.path.join(out_dir, "videos", vid + ".mp4"), frames, fps, crf=cfg.crf)
    ann = {"schema": SCHEMA, "vid": vid, "video": f"../videos/{vid}.mp4", "fps": fps, "num_frames": len(frames),
           "height": size[0], "width": size[1], "cuts": [sh["start_frame"] for sh in shots[1:]], "shots": shots}
    with open(os.path.join(out_dir, "annotations", vid + ".json"), "w") as f:
        json.dump(ann, f, indent=1)
    return ann
