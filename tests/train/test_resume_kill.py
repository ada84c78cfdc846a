"""Acceptance: kill -9 a `stvl train` subprocess at a random step, resume with --resume: the loss trace equals an
uninterrupted run's to the last printed digit, and the data order is identical."""

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest


from stvl_jax.train.metrics import format_loss, read_metrics

from .conftest import QUIET, REPO, TINY_TRAIN, stvl, subprocess_env

STEPS = 14
ARGS = [str(TINY_TRAIN), *QUIET, f"steps={STEPS}", "checkpoint.every=2", "checkpoint.keep=2"]
LINE = re.compile(r"^step (\d+) loss (\S+)", re.M)


def printed_losses(stdout: str) -> dict[int, str]:
    return {int(s): loss for s, loss in LINE.findall(stdout)}


def committed_steps(ckpt_dir) -> list[int]:
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.exists() else []


@pytest.mark.slow  # three training subprocesses, ~55-70 s: in .ci/run's slow tests/train run, out of the default suite
def test_kill9_then_resume_equals_the_uninterrupted_run(tmp_path):
    full = stvl("train", *ARGS, f"out_dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    full_printed = printed_losses(full.stdout)
    assert sorted(full_printed) == list(range(1, STEPS + 1))

    kill_at = random.Random().randint(3, STEPS - 3)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "stvl_jax.cli", "train", *ARGS, f"out_dir={out}"], cwd=REPO,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        logged = [r["step"] for r in read_metrics(out)] if (out / "metrics.jsonl").exists() else []
        if logged and logged[-1] >= kill_at and committed_steps(out / "checkpoints"):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before the kill (kill_at={kill_at}): {proc.communicate()[1][-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = read_metrics(out)[-1]["step"]
    assert killed_at < STEPS, "killed too late to test anything"

    resumed = stvl("train", *ARGS, f"out_dir={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(re.search(r"resumed from step (\d+)", resumed.stdout + resumed.stderr).group(1))
    assert 2 <= start <= killed_at, (start, killed_at)
    resumed_printed = printed_losses(resumed.stdout)
    assert sorted(resumed_printed) == list(range(start + 1, STEPS + 1))
    # the loss trace from the resume point, to the last printed digit, and exactly in the metrics file
    assert resumed_printed == {s: full_printed[s] for s in resumed_printed}, (kill_at, start)
    full_records, records = read_metrics(tmp_path / "full"), read_metrics(out)
    assert [r["loss"] for r in records] == [r["loss"] for r in full_records]
    assert [format_loss(r["loss"]) for r in records] == [full_printed[s] for s in range(1, STEPS + 1)]
    # the same batches in the same order (fingerprints of every step's input ids)
    assert [r["data_hash"] for r in records] == [r["data_hash"] for r in full_records]
    assert len({r["data_hash"] for r in records}) == STEPS
