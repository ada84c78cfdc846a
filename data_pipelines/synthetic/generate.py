"""`stvl data synth`: write the synthetic set (videos, ground truth, derived annotations, splits, manifest).

Layout under the output directory (paths inside files are relative to the file's own directory):
    manifest.json                 seed, config, splits, file list, counts
    videos/<vid>.mp4              H.264 (libx264, yuv444p)
    annotations/<vid>.json        per-video ground truth (schema stvl-synth-video/1)
    streamo/raw_<split>.json      Streamo raw QA (list, Streamo's raw annotation format)
    streamo/stream_<split>.jsonl  the same after `to-stream` (1 fps)
    stride/<split>.jsonl          STRIDE activation samples
    qvhighlights/<split>.jsonl    QVHighlights-format records
    qvhighlights/yesno_<split>.jsonl   timestamp Yes/No questions (balanced)
    masklets/<split>.jsonl        referring masklets
    captions/<split>.jsonl        chat samples (video -> event description)
Every video depends only on (seed, index): adding videos never changes existing ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from data_pipelines.synthetic.scene import SceneParams
from stvl_jax.errors import ConfigError

SCHEMA = "stvl-synth/1"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SynthConfig:
    num_videos: int = 64
    seed: int = 0
    scene: SceneParams = field(default_factory=SceneParams)
    crf: int = 18
    masklet_frames: int = 32

    def __post_init__(self):
        if self.num_videos <= 0:
            raise ConfigError(f"num_videos must be positive, got {self.num_videos}")


def split_of(index: int) -> str:
    """Deterministic 80/10/10 split by index (every tenth video to val, the next to test)."""
    return {8: "val", 9: "test"}.get(index % 10, "train")


def video_id(index: int) -> str:
    return f"synth_{index:05d}"


def _make_one(args) -> dict:
    """Render + encode + annotate one video (runs in a worker process). Returns its derived records."""
    out_dir, cfg, index = args
    from data_pipelines.synthetic import derived
    from data_pipelines.synthetic.annotations import build_ground_truth
    from data_pipelines.synthetic.render import render_frame, write_mp4
    from data_pipelines.synthetic.scene import sample_scene

    vid, split = video_id(index), split_of(index)
    scene = sample_scene(np.random.default_rng(np.random.SeedSequence([cfg.seed, index, 0])), cfg.scene)
    rendered = [render_frame(scene, k) for k in range(scene.num_frames)]
    write_mp4(os.path.join(out_dir, "videos", vid + ".mp4"), (f[0] for f in rendered), scene.fps, crf=cfg.crf)
    gt = build_ground_truth(scene, [f[1] for f in rendered], vid, f"../videos/{vid}.mp4", split)
    with open(os.path.join(out_dir, "annotations", vid + ".json"), "w") as f:
        json.dump(gt, f, separators=(",", ":"))
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, index, 1]))
    return {
        "vid": vid, "split": split,
        "streamo": derived.streamo_raw(gt, rng),
        "stride": derived.stride_samples(gt, rng),
        "qvh": derived.qvh_records(gt, first_qid=index * 100),
        "masklets": derived.masklets(gt, cfg.masklet_frames),
        "captions": [derived.caption_chat(gt)],
        "num_frames": gt["num_frames"], "fps": gt["fps"],
    }


def _write_jsonl(path: str, rows) -> int:
    n = 0
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
            n += 1
    return n


def generate_dataset(out_dir: str, cfg: SynthConfig = SynthConfig(), *, workers: int | None = None,
                     progress: bool = False) -> dict:
    """Write the set to out_dir (created; existing files of the same names are overwritten) -> manifest."""
    from data_pipelines.formats.qvhighlights import to_yesno
    from data_pipelines.formats.streamo import stream_num_frames, to_stream

    for sub in ("videos", "annotations", "streamo", "stride", "qvhighlights", "masklets", "captions"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    jobs = [(out_dir, cfg, i) for i in range(cfg.num_videos)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synth videos", unit="video")
    results = []
    if workers == 1 or len(jobs) == 1:
        for j in jobs:
            results.append(_make_one(j))
            bar and bar.update(1)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for r in pool.imap(_make_one, jobs, chunksize=2):
                results.append(r)
                bar and bar.update(1)
    if bar:
        bar.close()
    counts: dict[str, int] = {}
    for split in SPLITS:
        rs = [r for r in results if r["split"] == split]
        raw = [x for r in rs for x in r["streamo"]]
        with open(os.path.join(out_dir, "streamo", f"raw_{split}.json"), "w") as f:
            json.dump(raw, f, indent=1)
        n_turns = {r["vid"]: stream_num_frames(r["num_frames"], r["fps"], 1.0) for r in rs}
        stream = (to_stream(x, n_turns[x["video_name"][:-4]]) for x in raw)
        counts[f"streamo/raw_{split}"] = len(raw)
        counts[f"streamo/stream_{split}"] = _write_jsonl(os.path.join(out_dir, "streamo", f"stream_{split}.jsonl"),
                                                         stream)
        for key, sub in (("stride", "stride"), ("qvh", "qvhighlights"), ("masklets", "masklets"),
                         ("captions", "captions")):
            counts[f"{sub}/{split}"] = _write_jsonl(os.path.join(out_dir, sub, f"{split}.jsonl"),
                                                    (x for r in rs for x in r[key]))
        yes_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2, SPLITS.index(split)]))
        yesno = []
        for rec in (x for r in rs for x in r["qvh"]):
            try:
                yesno += to_yesno(rec, yes_rng)
            except ValueError:  # AnnotationError: window too short / covers the video; not a balanced pair
                counts["qvhighlights/yesno_skipped"] = counts.get("qvhighlights/yesno_skipped", 0) + 1
        yesno_path = os.path.join(out_dir, "qvhighlights", f"yesno_{split}.jsonl")
        counts[f"qvhighlights/yesno_{split}"] = _write_jsonl(yesno_path, yesno)
    manifest = {
        "schema": SCHEMA, "seed": cfg.seed, "num_videos": cfg.num_videos, "config": asdict(cfg),
        "splits": {s: [r["vid"] for r in results if r["split"] == s] for s in SPLITS},
        "counts": counts,
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest
