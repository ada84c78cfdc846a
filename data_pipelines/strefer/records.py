"""One clip's output record: the TFDS features of `tfds_dataset` and the chat record Grain trains from.

Features (text as JSON):
    clip_id, video (path as given), video_id: text; shot, segment, start_frame, end_frame: int; start, end, fps:
    float (seconds); frame_indices (T,) int64 / frame_times (T,) float32: the sampled masklet frames;
    metadata: {"entities": [...]} (annotators); masklets: {"entities": {id: [RLE|None] * T}, "anchor_frame",
    "scores", "height", "width"}; instructions: [pair, ...] (instructions.py); num_instructions: int;
    record: the pairs as a `chat` record (`data_pipelines.grain`: one user turn opens with the clip as a video
    part, then question / answer turns), what a `tfds:` Grain source hands the pipeline.
"""

from __future__ import annotations

import json

import numpy as np


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def chat_record(clip: dict, pairs: list[dict]) -> dict:
    messages = []
    for i, p in enumerate(pairs):
        content = [{"type": "text", "text": p["question"]}]
        if i == 0:
            content.insert(0, {"type": "video", "path": clip["video"], "start": clip["start"], "end": clip["end"]})
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": p["answer"]}]
    return {"messages": messages, "clip_id": clip["clip_id"]}


def tfds_features(clip: dict, meta: dict, masklets: dict, pairs: list[dict]) -> dict:
    return {
        "clip_id": clip["clip_id"], "video": clip["video"], "video_id": clip["video_id"],
        "shot": int(clip["shot"]), "segment": int(clip["segment"]),
        "start_frame": int(clip["start_frame"]), "end_frame": int(clip["end_frame"]),
        "start": float(clip["start"]), "end": float(clip["end"]), "fps": float(clip["fps"]),
        "frame_indices": np.asarray(masklets["frame_indices"], np.int64),
        "frame_times": np.asarray(masklets["frame_times"], np.float32),
        "metadata": _json(meta),
        "masklets": _json({**{k: v for k, v in masklets.items() if k not in ("frame_indices", "frame_times")},
                           "entities": {str(k): v for k, v in masklets["entities"].items()}}),
        "instructions": _json(pairs), "num_instructions": len(pairs),
        "record": _json(chat_record(clip, pairs)),
    }
