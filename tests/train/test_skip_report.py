"""`stvl train` reports what the Grain pipeline skipped: `skipped N` in the progress line, the counts per reason
at the end, `data/skipped/<reason>` in metrics.jsonl and TensorBoard, the same counts after a resume; more
unusable records than `data.max_skip_fraction`, or none usable, is one error line (exit status 2).

The index is 4 good caption records with a malformed line after the first and a missing video after the second,
read in file order (no shuffle) 2 usable records a step, repeating:
    step 1: good1, bad_json, good2     step 2: missing_file, good3, good4     step 3: good1, bad_json, good2
"""

import json
import struct
from pathlib import Path

import pytest

from stvl_jax.cli import main
from stvl_jax.train.metrics import read_metrics

from .conftest import QUIET, REPO

CAPTIONS = REPO / "configs/train/qwen3vl_tiny_captions.yaml"
# the counts after each step, by hand from the file order above
EXPECTED = [{"bad_json": 1}, {"bad_json": 1, "missing_file": 1}, {"bad_json": 2, "missing_file": 1}]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from data_pipelines.synthetic import SynthConfig, generate_dataset
    from data_pipelines.tokenizer import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("skips")
    generate_dataset(str(root / "synth"), SynthConfig(num_videos=4, seed=5), workers=1)
    good = (root / "synth/captions/train.jsonl").read_text().splitlines()
    assert len(good) == 4
    missing = json.loads(good[0])
    missing["messages"][0]["content"][0]["path"] = "../videos/not_there.mp4"
    bad = {"json": "{not json", "missing": json.dumps(missing)}
    mixed = root / "synth/captions/mixed.jsonl"
    mixed.write_text("\n".join([good[0], bad["json"], good[1], bad["missing"], good[2], good[3]]) + "\n")
    allbad = root / "synth/captions/allbad.jsonl"
    allbad.write_text("\n".join([bad["json"], bad["missing"]]) + "\n")
    long = root / "synth/captions/long.jsonl"  # 3 steps read 7 of its 14 records, one skipped
    long.write_text("\n".join([good[0], bad["json"], *good[1:], *good * 2, good[0]]) + "\n")
    short = root / "synth/captions/short.jsonl"  # one usable record: no batch of 2 in one pass
    short.write_text("\n".join([good[0], bad["json"]]) + "\n")
    empty = root / "empty.jsonl"
    empty.write_text("")
    return {"mixed": mixed, "allbad": allbad, "long": long, "short": short, "empty": empty,
            "tok": build_tiny_tokenizer(str(root / "tok"))}


def args(data, out_dir, index="mixed", *extra):
    return [*QUIET, f"out_dir={out_dir}", f"data.pipeline.index={data[index]}",
            f"data.pipeline.tokenizer={data['tok']}", "steps=3", "data.batch_size=2", "data.pad_batch_to_mesh=true",
            "data.pipeline.shuffle=false", "data.pipeline.preprocess.frames.max_frames=4", "optim.warmup_steps=0",
            *extra]


def train(capsys, *argv):
    rc = main(["train", str(CAPTIONS), *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err.strip()


def skipped_by_step(out_dir) -> list[dict]:
    return [{k.split("/")[-1]: v for k, v in r.items() if k.startswith("data/skipped/")} for r in read_metrics(out_dir)]


def tensorboard_scalars(logdir: Path) -> dict:
    """{tag: {step: value}} from the event files (TFRecord framing: length, crc, Event proto, crc)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for f in logdir.glob("events.out.tfevents.*"):
        raw, pos = f.read_bytes(), 0
        while pos < len(raw):
            n = struct.unpack("<Q", raw[pos:pos + 8])[0]
            event = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_progress_summary_metrics_and_tensorboard_show_the_skips(capsys, tmp_path, data):
    out_dir = tmp_path / "run"
    rc, out, err = train(capsys, *args(data, out_dir, "mixed", "data.max_skip_fraction=1",
                                       "logging.tensorboard=true"))
    assert rc == 0, err
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.rsplit(" ", 2)[1:] for line in steps] == [["skipped", "1"], ["skipped", "2"], ["skipped", "3"]]
    assert ("data: 6 examples used, 3 of 9 records read skipped (33.3%): bad_json 2 (first: mixed.jsonl:2), "
            "missing_file 1 (first: mixed.jsonl:4)") in out.splitlines()
    assert skipped_by_step(out_dir) == EXPECTED
    records = read_metrics(out_dir)
    assert [r["data/skipped"] for r in records] == [1, 2, 3]
    assert [r["data/examples"] for r in records] == [2, 4, 6]
    tb = tensorboard_scalars(out_dir / "tensorboard")
    assert tb["data/skipped/bad_json"] == {1: 1.0, 2: 1.0, 3: 2.0}
    assert tb["data/skipped/missing_file"] == {2: 1.0, 3: 1.0}
    assert tb["data/skipped"] == {1: 1.0, 2: 2.0, 3: 3.0}
    assert "train/loss" in tb


def test_resume_continues_the_counts(capsys, tmp_path, data):
    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.trainer import Trainer

    out_dir = tmp_path / "run"
    argv = args(data, out_dir, "mixed", "data.max_skip_fraction=1")
    Trainer(load_train_config(CAPTIONS, argv)).run(until=2)  # saves step 2, as a killed run's last checkpoint
    capsys.readouterr()
    # the counts at the checkpoint are the ones in its data state (run/), which the resumed run continues
    rc, out, err = train(capsys, *argv, "--resume")
    assert rc == 0, err
    assert "resumed from step 2" in out
    assert skipped_by_step(out_dir) == EXPECTED
    assert "data: 6 examples used, 3 of 9 records read skipped (33.3%): bad_json 2" in out


def test_too_many_unusable_records_stop_the_run(capsys, tmp_path, data):
    # default data.max_skip_fraction 0.1; judged once the whole index (6 records) was read: after step 2
    rc, out, err = train(capsys, *args(data, tmp_path / "run", "mixed"))
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err == (f"stvl train: error: 2 of 6 records read from {str(data['mixed'])!r} (33.3%) were unusable, more "
                   "than data.max_skip_fraction=0.1: bad_json 1 (first: mixed.jsonl:2), missing_file 1 (first: "
                   "mixed.jsonl:4); fix or drop those records, or raise data.max_skip_fraction")
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def test_a_fraction_over_the_limit_at_the_end_fails_after_saving(capsys, tmp_path, data):
    # 3 steps read 7 of the 14 records (too few to judge during the run), 1 skipped: judged at the end
    rc, out, err = train(capsys, *args(data, tmp_path / "run", "long"))
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert ("error: 1 of 7 records read from" in err and "(14.3%)" in err and "max_skip_fraction=0.1" in err
            and "bad_json 1 (first: long.jsonl:2)" in err), err
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]
    assert (tmp_path / "run/checkpoints/3").is_dir()  # the run was saved before it failed


@pytest.mark.parametrize("epochs", ["null", "1"])  # repeating (a whole pass of skips) or one pass
def test_an_index_without_a_usable_record_fails(capsys, tmp_path, data, epochs):
    rc, out, err = train(capsys, *args(data, tmp_path / "run", "allbad", f"data.pipeline.num_epochs={epochs}"))
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err == (f"stvl train: error: no usable record in {str(data['allbad'])!r}: all 2 records read were "
                   "skipped: bad_json 1 (first: allbad.jsonl:1), missing_file 1 (first: allbad.jsonl:2)")


def test_an_empty_index_fails(capsys, tmp_path, data):
    rc, out, err = train(capsys, *args(data, tmp_path / "run", "empty"))
    assert rc == 2 and err == f"stvl train: error: no usable record in {str(data['empty'])!r}: the index is empty"


def test_usable_records_that_fill_no_batch_fail(capsys, tmp_path, data):
    rc, out, err = train(capsys, *args(data, tmp_path / "run", "short", "data.pipeline.num_epochs=1"))
    assert rc == 2 and err == (f"stvl train: error: {str(data['short'])!r} ran out before the first step: its 1 usable "
                               "records (of 2) do not fill one batch of data.batch_size=2; 1 skipped: bad_json 1 "
                               "(first: short.jsonl:2)"), err
