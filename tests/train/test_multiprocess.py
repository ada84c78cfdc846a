"""Acceptance: a 2-process local run (2 CPU processes x 4 simulated devices, gloo) trains and checkpoints through
launch/local_multiprocess.sh; its checkpoint restores on 1 process, which continues the run."""

import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from stvl_jax.sharding import make_mesh
from stvl_jax.train.metrics import read_metrics
from stvl_jax.train.trainer import Trainer

from .conftest import QUIET, REPO, TINY_TRAIN, subprocess_env, tiny_config

ARGS = ("steps=6", "checkpoint.every=2", "checkpoint.keep=3", "checkpoint.async_save=true")


@pytest.mark.slow
def test_two_processes_train_and_checkpoint_then_one_process_resumes(tmp_path):
    out = tmp_path / "mp"
    env = subprocess_env(devices=4)
    env.pop("XLA_FLAGS")  # the launcher sets the per-process device count
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(REPO / "launch/local_multiprocess.sh"), "-n", "2", "-d", "4", "-l",
                           str(tmp_path / "logs"), str(TINY_TRAIN), *QUIET, f"out_dir={out}", *ARGS],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((tmp_path / "logs").glob("*.log")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:] + logs
    assert "done: step 6" in proc.stdout
    two = read_metrics(out)
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5, 6]
    ckpt = out / "checkpoints"
    assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [2, 4, 6]
    for step in (2, 4, 6):
        run = ckpt / str(step) / "run"
        assert (run / "data_process_0-of-2.json").exists() and (run / "data_process_1-of-2.json").exists()
    assert (out / "train_config.yaml").exists()

    # one process with all 8 devices resumes from step 4 (step 6 removed) and redoes steps 5-6
    shutil.rmtree(ckpt / "6")
    one = Trainer(tiny_config(out, *ARGS, "checkpoint.resume=required"),
                  mesh=make_mesh({"fsdp": 8}, devices=jax.devices()[:8]))
    assert one.resumed_from == 4 and jax.process_count() == 1
    assert one.source.get_state() == {"index": 4}  # the global data position survives the process change
    one.run()
    resumed = read_metrics(out)
    assert [r["data_hash"] for r in resumed] == [r["data_hash"] for r in two]
    np.testing.assert_allclose([r["loss"] for r in resumed[4:]], [r["loss"] for r in two[4:]], rtol=1e-6)
    np.testing.assert_allclose([r["grad_norm"] for r in resumed[4:]], [r["grad_norm"] for r in two[4:]], rtol=1e-5)
