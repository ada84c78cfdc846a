"""The wheel is a working product: it ships the presets, train configs and benchmarks, and an installed `stvl`
finds them from any directory (`.ci/run` runs the slow test; the fast one checks the file list)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "runs", "out")


def _source_copy(dst: Path) -> Path:
    """The checkout's files (tracked + untracked, not ignored), copied: setuptools builds in the source tree and a
    stale build/ there would leak removed files into the wheel."""
    try:
        names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                               capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: copy the tree
        shutil.copytree(REPO, dst, ignore=_IGNORED)
        return dst
    for name in filter(None, names):
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    return dst


def build_wheel(tmp: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout, offline (the current environment's setuptools)."""
    src = _source_copy(tmp / "src")
    out = tmp / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out), str(src)], check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (wheel,) = out.glob("stvl_jax-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_ships_presets_train_configs_and_benchmarks_only(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*.yaml")}
    expected |= {f"benchmarks/{p.name}" for p in (REPO / "benchmarks").glob("*.py")} | {"configs/__init__.py"}
    expected |= {"configs/models/qwen3vl_tiny.yaml", "configs/train/streamo_tiny.yaml", "benchmarks/common.py",
                 "benchmarks/forward_vs_torch.py", "stvl_jax/packaged.py", "stvl_jax/cli.py"}
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if n.startswith(("research/", "tests/", "docs/"))]


def _venv_with_wheel(tmp: Path, wheel: Path) -> Path:
    """A fresh venv whose own site-packages holds only the wheel (installed --no-deps); the dependencies come from
    this environment's site-packages, added by a plain .pth line, so its .pth files (an editable install of this
    checkout) are not run."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_stvl_ci_base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
                    str(wheel)], check=True, env=_clean_env())
    return venv


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "JAX_PLATFORMS": "cpu"}


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_repository(wheel, tmp_path):
    venv = _venv_with_wheel(tmp_path, wheel)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def run(*args):
        res = subprocess.run([*args], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr[-3000:])
        return res.stdout

    where = run(str(venv / "bin" / "python"), "-c",
                "import benchmarks, configs, stvl_jax; print(stvl_jax.__file__, configs.__file__, benchmarks.__file__)")
    for path in where.split():  # the wheel's copies, not the checkout's
        assert Path(path).resolve().is_relative_to(venv.resolve()), where
    stvl = str(venv / "bin" / "stvl")
    listed = run(stvl, "bench", "list").split("benchmarks:")[1].split()
    assert listed == sorted(p.stem for p in (REPO / "benchmarks").glob("*.py")
                            if p.stem != "common" and not p.stem.startswith("_")), listed  # _*: private parts
    assert "usage" in run(stvl, "demo", "--help")
    out = run(stvl, "train", "qwen3vl_tiny_synthetic", "steps=2", f"out_dir={cwd / 'run'}", "logging.progress=false")
    assert "done: step 2" in out, out
    assert (cwd / "run" / "checkpoints" / "2" / "stvl_config.json").is_file()
