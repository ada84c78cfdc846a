"""The engine on Beam end to end: DirectRunner in-process and with 2 worker processes, determinism, dead
letters for bad videos, one clear line for an empty folder, the TFDS output read back through Grain."""

import json
import os
import shutil

import numpy as np
import pytest

from strefer_helpers import read_dataset


def _same(a, b):
    assert [x["clip_id"] for x in a] == [x["clip_id"] for x in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert np.array_equal(x[k], y[k]) if isinstance(x[k], np.ndarray) else x[k] == y[k], (x["clip_id"], k)


def _order(out):
    """Clip ids in the order of the written records (TFDS orders by a hash of the key)."""
    import tensorflow_datasets as tfds

    src = tfds.data_source("strefer", split="train", data_dir=out)
    return [src[i]["clip_id"] for i in range(len(src))]


def test_end_to_end_counters_and_rerun_identical(strefer_set, strefer_run, tmp_path):
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    summary, examples = strefer_run
    c = summary["counters"]
    # 4 single-shot videos of 12-16 s at 4 fps -> 2 clips each (8 s + the rest); the 3-shot video -> 6
    assert summary["videos"] == 5 and c["videos"] == 5
    assert c["clips"] == summary["examples"] + summary["dead_letters"] == len(examples) == 14
    assert summary["dead_letters"] == 0 and open(summary["dead_letter_path"]).read() == ""
    assert c["pairs"] == sum(len(e["instructions"]) for e in examples)
    with open(os.path.join(summary["out"], "metadata.json")) as f:  # provenance: the engine config
        assert json.load(f)["engine"] == EngineConfig().to_dict()
    again = run_engine(os.path.join(strefer_set, "videos"), str(tmp_path), EngineConfig())
    assert again["counters"] == c
    _same(read_dataset(str(tmp_path)), examples)
    # Same records in the same order (the same bytes, across processes too: test_strefer_output_bytes.py)
    assert _order(str(tmp_path)) == _order(os.path.dirname(os.path.dirname(summary["out"])))


# ~12 s on 2 shared cores (two worker processes each import Beam, TFDS and PyAV)
def test_two_worker_processes_same_output(strefer_set, strefer_run, tmp_path):
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    summary, examples = strefer_run
    s = run_engine(os.path.join(strefer_set, "videos"), str(tmp_path), EngineConfig(),
                   beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert s["counters"] == summary["counters"]
    assert _order(str(tmp_path)) == _order(os.path.dirname(os.path.dirname(summary["out"])))
    assert open(s["dead_letter_path"]).read() == open(summary["dead_letter_path"]).read()
    _same(read_dataset(str(tmp_path)), examples)


def test_bad_videos_go_to_dead_letters(bad_videos, strefer_set, tmp_path):
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    vids = tmp_path / "videos"
    vids.mkdir()
    for kind in ("truncated", "zero", "text"):
        shutil.copy(bad_videos[kind], vids / f"{kind}.mp4")
    shutil.copy(os.path.join(strefer_set, "videos", "synth_00002.mp4"), vids / "synth_00002.mp4")
    (tmp_path / "annotations").mkdir()
    shutil.copy(os.path.join(strefer_set, "annotations", "synth_00002.json"), tmp_path / "annotations")
    (vids / "notes.txt").write_text("not a video")
    # a good video without ground truth: the synthetic annotator dead-letters its clips (no_ground_truth)
    shutil.copy(bad_videos["good"], vids / "orphan.mp4")
    out = tmp_path / "out"
    s = run_engine(str(vids), str(out), EngineConfig())
    dead = [json.loads(line) for line in open(s["dead_letter_path"])]
    by_video = {}
    for d in dead:
        el = d["element"]
        by_video.setdefault(os.path.basename(el if isinstance(el, str) else el["video"]), set()).add(
            (d["stage"], d["reason"]))
        assert d["message"] and "\n" not in d["message"]
    assert by_video == {"truncated.mp4": {("clip", "bad_video")}, "zero.mp4": {("clip", "bad_video")},
                        "text.mp4": {("clip", "bad_video")}, "orphan.mp4": {("annotate", "no_ground_truth")}}
    c = s["counters"]
    assert c["videos"] == 5 and c["dead_bad_video"] == 3 and c["dead_no_ground_truth"] == c["clips"] - s["examples"]
    assert s["examples"] > 0 and s["ignored_files"] == 1  # synth_00002's clips made it; notes.txt not a video
    again = run_engine(str(vids), str(tmp_path / "out2"), EngineConfig(),
                       beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert open(again["dead_letter_path"]).read() == open(s["dead_letter_path"]).read()  # sorted: same file


def test_no_example_at_all_one_line(bad_videos, tmp_path):
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine
    from stvl_jax.errors import InputError

    (tmp_path / "v").mkdir()
    shutil.copy(bad_videos["text"], tmp_path / "v" / "text.mp4")
    with pytest.raises(InputError, match="no example") as e:
        run_engine(str(tmp_path / "v"), str(tmp_path / "out"), EngineConfig())
    assert "\n" not in str(e.value)


# ~15 s: two fresh processes. Beam orders independent stages by hashes that change with the process's
# PYTHONHASHSEED, so the order that lost the dead letters is pinned by running with fixed seeds.
def test_no_example_at_all_still_writes_the_dead_letters(bad_videos, tmp_path):
    import subprocess
    import sys

    (tmp_path / "v").mkdir()
    shutil.copy(bad_videos["truncated"], tmp_path / "v" / "truncated.mp4")
    script = ("import sys\n"
              "from data_pipelines.strefer.config import EngineConfig\n"
              "from data_pipelines.strefer.run import run_engine\n"
              "from stvl_jax.errors import InputError\n"
              "try:\n"
              "    run_engine(sys.argv[1], sys.argv[2], EngineConfig())\n"
              "except InputError as e:\n"
              "    print(e)\n")
    for seed in ("0", "1"):
        out = tmp_path / f"out{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "v"), str(out)], env=env,
                           capture_output=True, text=True, timeout=300)
        assert "no example was produced" in r.stdout, r.stderr[-2000:]
        dead = [json.loads(line) for line in open(out / "dead_letter.jsonl")]
        assert [(d["stage"], d["reason"]) for d in dead] == [("clip", "bad_video")], seed


def test_empty_or_missing_folder_one_line(tmp_path):
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine
    from stvl_jax.errors import InputError

    (tmp_path / "empty").mkdir()
    for d, why in ((tmp_path / "empty", "no video files"), (tmp_path / "nope", "not a directory")):
        with pytest.raises(InputError, match=why) as e:
            run_engine(str(d), str(tmp_path / "out"), EngineConfig())
        assert "\n" not in str(e.value) and str(d) in str(e.value)


def test_existing_output_needs_overwrite(strefer_set, strefer_run):
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine
    from stvl_jax.errors import InputError

    summary, _ = strefer_run
    out = os.path.dirname(os.path.dirname(summary["out"]))
    with pytest.raises(InputError, match="--overwrite"):
        run_engine(os.path.join(strefer_set, "videos"), out, EngineConfig())


def test_grain_reads_the_output_through_tfds(strefer_run, tiny_tokenizer):
    from data_pipelines.grain import PipelineConfig, make_pipeline
    from data_pipelines.grain.sources import open_source

    summary, examples = strefer_run
    spec = f"tfds:strefer/train@{os.path.dirname(os.path.dirname(summary['out']))}"
    src = open_source(spec)
    assert len(src) == len(examples)
    rec = json.loads(src[0]["data"])
    assert rec["messages"][0]["content"][0]["type"] == "video" and rec["clip_id"] in {e["clip_id"] for e in examples}
    cfg = PipelineConfig.from_dict({
        "index": spec, "tokenizer": tiny_tokenizer, "format": "chat", "batch_size": 2, "shuffle": False,
        "length_buckets": [2048, 4096, 8192], "preprocess": {"frames": {"fps": 1.0, "max_frames": 4}},
        "shard": "none", "strict": True})
    with make_pipeline(cfg) as it:
        batch = next(iter(it))
    assert batch["input_ids"].shape[0] == 2 and "pixel_values_videos" in batch
    with pytest.raises(Exception, match="tfds index"):
        open_source("tfds:strefer/train@/nonexistent/dir")
