"""Damaged training checkpoints and non-finite steps, reproduced for real: files Orbax wrote are deleted,
truncated or have a byte flipped; a NaN is put into a batch's pixels. Resume falls back to the newest checkpoint
that restores (one line per skipped one), checksums catch silent corruption, a NaN step stops the run or is
skipped without touching the state, and a non-finite state is never saved."""

import dataclasses
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from stvl_jax.errors import CheckpointError, TrainingError
from stvl_jax.sharding import make_mesh
from stvl_jax.train.metrics import read_metrics
from stvl_jax.train.trainer import Trainer

from .conftest import tiny_config

COMMON = ("steps=4", "checkpoint.every=2", "checkpoint.keep=3", "optim.warmup_steps=1")


def _mesh():
    return make_mesh({"fsdp": 8}, devices=jax.devices()[:8])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A finished 4-step run with checkpoints at steps 2 and 4, and the trainer that wrote them."""
    out = tmp_path_factory.mktemp("saved")
    trainer = Trainer(tiny_config(out, *COMMON), mesh=_mesh())
    trainer.run()
    return out, trainer


def _copy(saved, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(saved[0], dst)
    return dst


def _largest_data_file(step_dir: Path, item: str) -> Path:
    files = [p for p in (step_dir / item).rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _resume(out, *overrides):
    return Trainer(tiny_config(out, *COMMON, "checkpoint.resume=required", *overrides), mesh=_mesh())


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _assert_state_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("damage, item, reason", [
    ("delete", "params", "cannot be read: its data is missing or truncated"),
    ("truncate", "opt_state", "cannot be read: its data is missing or truncated"),
    ("flip", "params", "does not match its checksum"),
])
def test_resume_falls_back_from_a_damaged_latest_checkpoint(saved, tmp_path, capsys, damage, item, reason):
    out = _copy(saved, tmp_path)
    ck = out / "checkpoints"
    f = _largest_data_file(ck / "4", item)
    if damage == "delete":
        f.unlink()
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    else:
        _flip_middle_byte(f)
    capsys.readouterr()
    trainer = _resume(out)
    assert trainer.resumed_from == 2
    lines = capsys.readouterr().out.splitlines()
    skipped = [ln for ln in lines if ln.startswith("skipping")]
    assert len(skipped) == 1 and "checkpoint step 4" in skipped[0] and reason in skipped[0], lines
    assert f"'{item}/" in skipped[0]  # names the array
    assert any("moved the skipped checkpoint(s) [4]" in ln for ln in lines)
    assert (ck / "damaged" / "4").is_dir() and not (ck / "4").exists()
    # the resumed run saves step 4 again: the same state as the uninterrupted run's (fp32 CPU is exact)
    trainer.run()
    assert (ck / "4" / "integrity.json").is_file()
    _assert_state_equal(trainer.state, saved[1].state)


def test_no_checkpoint_restores_is_one_clear_error(saved, tmp_path, capsys):
    out = _copy(saved, tmp_path)
    for step in ("2", "4"):
        _largest_data_file(out / "checkpoints" / step, "params").unlink()
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* restores: steps \[4, 2\] are all damaged"):
        _resume(out)
    skipped = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("skipping")]
    assert len(skipped) == 2 and all(len(ln) < 400 for ln in skipped)


def test_verify_false_skips_the_checksums(saved, tmp_path):
    out = _copy(saved, tmp_path)
    _flip_middle_byte(_largest_data_file(out / "checkpoints" / "4", "params"))
    assert _resume(out, "checkpoint.verify=false").resumed_from == 4  # unverified: the corruption goes through


def test_load_model_of_a_step_directory_verifies(saved, tmp_path):
    import stvl_jax

    out = _copy(saved, tmp_path)
    step = out / "checkpoints" / "4"
    _flip_middle_byte(_largest_data_file(step, "params"))
    with pytest.raises(CheckpointError, match=r"array 'params/.*' does not match its checksum"):
        stvl_jax.load_model(step)


def test_save_refuses_a_non_finite_state(saved, tmp_path):
    out = _copy(saved, tmp_path)
    trainer = _resume(out)
    state = trainer.state
    key = next(iter(state.params))
    nan = state.params[key].at[(0,) * state.params[key].ndim].set(np.nan)
    bad = dataclasses.replace(state, step=state.step + 2, params={**state.params, key: nan})
    with pytest.raises(CheckpointError, match=rf"refusing to save step 6 .* e\.g\. 'params/{key}'"):
        trainer._save(bad, {"index": 6})
    trainer.checkpointer.wait()
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]


def _poison(trainer, at_step: int):
    """NaN pixels in the batch of optimizer step `at_step` (1-based)."""
    source, n = trainer.source, [0]

    class Poisoned:
        def __next__(self):
            batch = next(source)
            n[0] += 1
            if n[0] == at_step:
                batch = dict(batch, pixel_values=np.full_like(batch["pixel_values"], np.nan))
            return batch

        def __getattr__(self, name):
            return getattr(source, name)

    trainer.source = Poisoned()


def test_non_finite_step_is_skipped_without_touching_the_state(tmp_path, capsys):
    trainer = Trainer(tiny_config(tmp_path, *COMMON, "optim.non_finite=skip"), mesh=_mesh())
    _poison(trainer, 1)
    placed = trainer._read_step_batches()[0]
    before = trainer.state
    kept = jax.tree.map(np.asarray, (before.params, before.opt_state))
    state, metrics = trainer._dispatch(before, placed)
    assert not np.isfinite(float(metrics["loss"]))
    _assert_state_equal((state.params, state.opt_state), kept)  # params and Adam moments/count unchanged
    assert int(state.step) == 1


def test_skip_mode_counts_and_goes_on(tmp_path, capsys):
    trainer = Trainer(tiny_config(tmp_path, *COMMON, "optim.non_finite=skip"), mesh=_mesh())
    _poison(trainer, 3)
    summary = trainer.run()
    assert summary["step"] == 4 and summary["non_finite_skipped"] == 1
    assert "step 3: loss nan grad_norm nan is not finite: update skipped (1 skipped so far)" in capsys.readouterr().out
    records = read_metrics(tmp_path)
    assert [r["non_finite_skipped"] for r in records] == [0, 0, 1, 1]
    assert np.isfinite(records[-1]["loss"])
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(trainer.state.params))


def test_stop_mode_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, *COMMON), mesh=_mesh())
    _poison(trainer, 3)
    with pytest.raises(TrainingError, match=r"step 3: loss nan .* not finite; training stopped \(last checkpoint: "
                                            r"step 2\)"):
        trainer.run()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
