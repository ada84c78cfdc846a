"""`stvl train` user errors: one clear line on stderr, exit status 2, nothing compiled first."""

import pytest

from stvl_jax.cli import main

from .conftest import QUIET, TINY_TRAIN


def run(capsys, tmp_path, *args):
    rc = main(["train", str(TINY_TRAIN), *QUIET, f"out_dir={tmp_path / 'out'}", *args])
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("override,expected", [
    ("optim.lrr=1e-3", "unknown key 'optim.lrr'"),
    ("bogus=1", "unknown key 'bogus'"),
    ("optim.groups.vision.trian=false", "unknown key 'optim.groups.vision.trian'"),
    ("steps=zero", "steps: Input should be a valid integer"),
    ("loss.kind=focal", "loss.kind 'focal' is not a registered loss"),
])
def test_config_errors(capsys, tmp_path, override, expected):
    rc, err = run(capsys, tmp_path, override)
    assert rc == 2 and expected in err and len(err.splitlines()) == 1, err


def test_indivisible_batch(capsys, tmp_path):
    rc, err = run(capsys, tmp_path, "data.batch_size=6", "mesh.fsdp=4", "mesh.data=2")
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "data.batch_size=6 is not divisible by the data-parallel mesh size 8" in err


def test_mesh_that_does_not_fit_the_devices(capsys, tmp_path):
    rc, err = run(capsys, tmp_path, "mesh.fsdp=3")
    assert rc == 2 and "needs 3 devices but 8 are available" in err and len(err.splitlines()) == 1, err
    rc, err = run(capsys, tmp_path, "mesh.data=3")  # fsdp=-1 fills the rest: 8 / 3 does not work
    assert rc == 2 and "does not divide the 8 available devices" in err and len(err.splitlines()) == 1, err


def test_missing_checkpoints(capsys, tmp_path):
    rc, err = main(["train", str(TINY_TRAIN), *QUIET, f"out_dir={tmp_path / 'empty'}", "--resume"]), \
        capsys.readouterr().err.strip()
    assert rc == 2 and "--resume: no checkpoint in" in err and len(err.splitlines()) == 1, err
    rc, err = run(capsys, tmp_path, "model.config=null", f"model.checkpoint={tmp_path / 'nope'}")
    assert rc == 2 and "does not exist" in err and "nope" in err and len(err.splitlines()) == 1, err


def test_only_one_model_source(capsys, tmp_path):
    rc, err = run(capsys, tmp_path, f"model.checkpoint={tmp_path}")
    assert rc == 2 and "set exactly one of model.config, model.arch, model.checkpoint" in err, err


def test_refuses_to_overwrite_existing_checkpoints(capsys, tmp_path):
    (tmp_path / "out" / "checkpoints" / "3").mkdir(parents=True)
    rc, err = run(capsys, tmp_path)
    assert rc == 2 and "already holds checkpoints" in err and "--resume" in err, err
