"""The demo's world (`stvl demo`; docs/training.md): one bright block on a dark background whose every answer is
on screen, sized so that the tiny models can see it.

Why not the default set (`generate.py`): there the questions name one of 2-4 shapes ~10 px across at the demo's
56 px frames (a fraction of one merged token) and the event timings follow the scripts, so a randomly initialised
tiny model learns the text prior and the clock, not the pixels (research/notes/streamo_learnability.md). Here:
- the block fills one quadrant of the 128 px frame: exactly one merged token of the demo's 56 px (Streamo) and
  64 px (STRIDE) frames (2 x 2 merged tokens per frame), bright on near-black;
- one block per video and questions that name no colour or shape ("the block"): nothing to bind;
- its timing is random per video: it appears at a random second (or never: 1 video in 5), may jump from the
  left to the right half at a random later second, and leaves at a random later second (or stays). Every
  question is asked of every video, so each question has counterfactual twins where its event comes at another
  time or not at all, and neither the clock nor the wording tells when.

Questions (Streamo, asked at the first turn; the states follow from the frames and the earlier states alone):
  event_appear  "Tell me when the block appears."  -> `</Response>` at the first turn that shows it;
  event_right   "Tell me when the block is on the right."  -> `</Response>` at the first turn with it in the right
                half;
  event_gone    "Tell me when the block is gone."  -> `</Standby>` while it shows, `</Response>` at the first
                turn after (asked only where it leaves before the end or never shows).
STRIDE queries (spans of >= 2 s): "When is the block visible?" (visible) and "When is the block on the right?"
(right), clips cut before / inside / after as in the default set (`derived.event_clip_samples`).

Layout (what `stvl demo`, `stvl eval streamo` and `stvl eval stride --data` read): manifest.json, videos/,
annotations/<vid>.json (duration, fps, the block's timeline), streamo/raw_<split>.json, stride/<split>.jsonl.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from data_pipelines.synthetic.derived import event_clip_samples, streamo_span
from data_pipelines.synthetic.generate import SPLITS, split_of, video_id
from stvl_jax.errors import ConfigError

SCHEMA = "stvl-demo-world/1"
SIZE, FPS = 128, 4
BACKGROUND = 16
# saturated, far from the background and from each other (what the block looks like does not matter)
COLOURS = {"red": (235, 45, 45), "yellow": (240, 225, 40), "white": (240, 240, 240)}
QUESTIONS = {"appear": "Tell me when the block appears.", "right": "Tell me when the block is on the right.",
             "gone": "Tell me when the block is gone."}
ANSWERS = {"appear": "The block appears.", "right": "The block is on the right.", "gone": "The block is gone."}
STRIDE_QUERIES = {"visible": "When is the block visible?", "right": "When is the block on the right?"}


@dataclass(frozen=True)
class DemoWorldConfig:
    num_videos: int = 200
    seed: int = 0
    min_duration: int = 10
    max_duration: int = 14
    p_absent: float = 0.2  # the block never shows
    p_jump: float = 0.6  # it jumps from the left half to the right half
    p_stays: float = 0.3  # it does not leave before the end

    def __post_init__(self):
        if self.num_videos <= 0:
            raise ConfigError(f"demo world num_videos must be positive, got {self.num_videos}")
        if not 8 <= self.min_duration <= self.max_duration:
            raise ConfigError(f"demo world durations must satisfy 8 <= min_duration <= max_duration, got "
                              f"{self.min_duration}, {self.max_duration}")
        for name in ("p_absent", "p_jump", "p_stays"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"demo world {name} must be a probability in [0, 1], got {getattr(self, name)}")


def sample_timeline(rng: np.random.Generator, cfg: DemoWorldConfig) -> dict:
    """One video's block: {duration, colour, row, shown: [s, e) or None, right_from: second or None}, in whole
    seconds (e == duration: it stays). It starts in the left half when it jumps, else in a random half."""
    duration = int(rng.integers(cfg.min_duration, cfg.max_duration + 1))
    colour = str(rng.choice(list(COLOURS)))
    row = int(rng.integers(2))
    if rng.random() < cfg.p_absent:
        return {"duration": duration, "colour": colour, "row": row, "shown": None, "right_from": None}
    s = int(rng.integers(1, duration - 4))  # leaves room for a >= 2 s stay and a turn after it
    e = duration if rng.random() < cfg.p_stays else int(rng.integers(s + 2, duration))
    if e - s >= 4 and rng.random() < cfg.p_jump:
        right_from = int(rng.integers(s + 1, e - 1))  # >= 1 s on each side
    else:
        right_from = s if rng.random() < 0.5 else None  # the whole stay on the right, or on the left
    return {"duration": duration, "colour": colour, "row": row, "shown": [s, e], "right_from": right_from}


def block_at(tl: dict, t: float) -> tuple[int, int] | None:
    """(row, column) of the quadrant the block fills at time t (seconds), or None while it is not shown."""
    if tl["shown"] is None or not tl["shown"][0] <= t < tl["shown"][1]:
        return None
    return tl["row"], int(tl["right_from"] is not None and t >= tl["right_from"])


def render(tl: dict) -> list[np.ndarray]:
    """The video's frames: (SIZE, SIZE, 3) uint8 at FPS."""
    frames, half = [], SIZE // 2
    for k in range(tl["duration"] * FPS):
        f = np.full((SIZE, SIZE, 3), BACKGROUND, np.uint8)
        if (q := block_at(tl, k / FPS)) is not None:
            f[q[0] * half:(q[0] + 1) * half, q[1] * half:(q[1] + 1) * half] = COLOURS[tl["colour"]]
        frames.append(f)
    return frames


def right_span(tl: dict) -> tuple[int, int] | None:
    """[start, end) seconds of the block in the right half, or None."""
    if tl["shown"] is None or tl["right_from"] is None:
        return None
    return tl["right_from"], tl["shown"][1]


def streamo_raw(gt: dict) -> list[dict]:
    """The Streamo raw QA of one video (Streamo times: time t = the turn that shows second t - 1)."""
    tl, base = gt["block"], {"video_name": gt["vid"] + ".mp4", "video_path": gt["video"], "source": "stvl-demo"}
    shown, right = tl["shown"], right_span(tl)
    out = []

    def ask(kind: str, responses: list[dict]) -> None:
        out.append({**base, "task_type": f"event_{kind}", "question": [{"content": QUESTIONS[kind], "time": "1"}],
                    "response": responses})

    ask("appear", [] if shown is None else [{"content": ANSWERS["appear"], "time": str(shown[0] + 1)}])
    ask("right", [] if right is None else [{"content": ANSWERS["right"], "time": str(right[0] + 1)}])
    if shown is None:
        ask("gone", [])
    elif shown[1] < tl["duration"]:  # it leaves: standby on the seconds it shows, the answer at the next turn
        st, end = streamo_span({"start": shown[0], "end": shown[1] - 1})
        ask("gone", [{"content": ANSWERS["gone"], "st_time": st, "end_time": end, "time": ""}])
    return out


def stride_samples(gt: dict, rng: np.random.Generator) -> list[dict]:
    """STRIDE activation samples: per span of >= 2 s (visible; right), clips before / inside / after it. The
    target ends just before the second the block is gone, so the active slots are exactly those it shows in."""
    tl, out = gt["block"], []
    for action, span in (("visible", tl["shown"]), ("right", right_span(tl))):
        if span is not None and span[1] - span[0] >= 2:
            out += event_clip_samples(gt, STRIDE_QUERIES[action], float(span[0]), span[1] - 0.01, rng,
                                      {"action": action, "entity": 1})
    return out


def generate_demo_world(out_dir: str, cfg: DemoWorldConfig = DemoWorldConfig(), *, progress: bool = False) -> dict:
    """Write the world to out_dir (the layout in the module docstring) -> manifest. Video i depends only on
    (seed, i); splits as the default set's (`split_of`)."""
    from data_pipelines.synthetic.render import write_mp4

    for sub in ("videos", "annotations", "streamo", "stride"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    rows = {s: {"streamo": [], "stride": []} for s in SPLITS}
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    indices = range(cfg.num_videos)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="demo world videos", unit="video")
    for i in indices:
        vid, split = video_id(i), split_of(i)
        tl = sample_timeline(np.random.default_rng(np.random.SeedSequence([cfg.seed, i, 0])), cfg)
        write_mp4(os.path.join(out_dir, "videos", vid + ".mp4"), render(tl), FPS)
        gt = {"schema": SCHEMA, "vid": vid, "video": f"../videos/{vid}.mp4", "split": split, "fps": FPS,
              "duration": float(tl["duration"]), "num_frames": tl["duration"] * FPS, "height": SIZE,
              "width": SIZE, "block": tl}
        with open(os.path.join(out_dir, "annotations", vid + ".json"), "w") as f:
            json.dump(gt, f)
        splits[split].append(vid)
        rows[split]["streamo"] += streamo_raw(gt)
        rows[split]["stride"] += stride_samples(gt, np.random.default_rng(np.random.SeedSequence([cfg.seed, i, 1])))
    counts = {}
    for split, r in rows.items():
        with open(os.path.join(out_dir, "streamo", f"raw_{split}.json"), "w") as f:
            json.dump(r["streamo"], f, indent=1)
        with open(os.path.join(out_dir, "stride", f"{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in r["stride"])
        counts[f"streamo/raw_{split}"], counts[f"stride/{split}"] = len(r["streamo"]), len(r["stride"])
    manifest = {"schema": SCHEMA, "seed": cfg.seed, "num_videos": cfg.num_videos, "config": asdict(cfg),
                "splits": splits, "counts": counts}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest
