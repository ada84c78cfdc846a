"""`stvl data strefer`: run the engine over a folder of videos into a TFDS dataset, print the counters.

    summary = run_engine("videos/", "out/", EngineConfig(), runner="DirectRunner",
                         beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])

Writes out/strefer/<version>/ (TFDS, ArrayRecord shards) and out/dead_letter.jsonl (or `dead_letter_path`).
"""

from __future__ import annotations

import json
import os
import time

from data_pipelines.strefer.config import VIDEO_EXTENSIONS, EngineConfig
from data_pipelines.storage import list_videos
from stvl_jax.errors import InputError

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PrismRunner")


def run_engine(videos_dir: str, out_dir: str, cfg: EngineConfig, *, runner: str = "DirectRunner",
               beam_args=(), chat_factory=None, overwrite: bool = False, dead_letter_path: str | None = None) -> dict:
    import tensorflow_datasets as tfds
    from apache_beam.options.pipeline_options import PipelineOptions

    from data_pipelines.strefer.pipeline import counters
    from data_pipelines.strefer.tfds_dataset import StreferDataset

    if runner not in RUNNERS:
        raise InputError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    from etils import epath  # local paths and gs:// alike (what TFDS writes through)

    videos, ignored = list_videos(videos_dir, VIDEO_EXTENSIONS)
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    dead_letter_path = dead_letter_path or os.path.join(out_dir, "dead_letter.jsonl")
    builder = StreferDataset(data_dir=out_dir, videos=videos, engine=cfg, dead_letter_path=dead_letter_path,
                             chat_factory=chat_factory)
    if epath.Path(builder.data_dir).exists():
        if not overwrite:
            raise InputError(f"--out {out_dir!r} already holds a strefer dataset ({builder.data_dir}); pass "
                             f"--overwrite to replace it")
        epath.Path(builder.data_dir).rmtree()
        builder = StreferDataset(data_dir=out_dir, videos=videos, engine=cfg, dead_letter_path=dead_letter_path,
                                 chat_factory=chat_factory)
    options = PipelineOptions([f"--runner={runner}", *beam_args])
    t0 = time.perf_counter()
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_options=options))
    except Exception as e:
        # TFDS refuses to write a split without examples (the pipeline stops, its counters are lost).
        if "number of generated examples is 0" not in str(e):
            raise
        raise InputError(f"no example was produced from the {len(videos)} videos under {videos_dir!r}: every clip "
                         f"failed or was dropped (the reasons: {dead_letter_path})") from None
    seconds = time.perf_counter() - t0
    counts = counters(builder.pipeline_result) if builder.pipeline_result is not None else {}
    dead = 0
    if epath.Path(dead_letter_path).exists():
        dead = sum(1 for line in epath.Path(dead_letter_path).read_text().splitlines() if line.strip())
    examples = builder.info.splits["train"].num_examples
    return {"out": builder.data_dir, "videos": len(videos), "ignored_files": ignored, "examples": examples,
            "dead_letters": dead, "dead_letter_path": dead_letter_path, "counters": counts,
            "seconds": round(seconds, 2), "clips_per_min": round(60 * counts.get("clips", 0) / seconds, 1)}


def print_summary(summary: dict) -> None:
    print("strefer counters:")
    for k, v in summary["counters"].items():
        print(f"  {k:32s} {v}")
    print(json.dumps({k: v for k, v in summary.items() if k != "counters"}))


def plot_families(counts: dict, path: str) -> str:
    """Bar chart of the instruction families (`family_<name>` counters) -> path (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = sorted((k[len("family_"):], v) for k, v in counts.items() if k.startswith("family_"))
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh([f for f, _ in fams], [v for _, v in fams])
    ax.set_xlabel("instruction-response pairs")
    ax.set_title(f"Strefer engine: {sum(v for _, v in fams)} pairs by family")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
