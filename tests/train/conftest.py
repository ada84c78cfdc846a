"""Shared helpers for training tests: the shipped tiny config with test overrides, and subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = REPO / "configs/train/qwen3vl_tiny_synthetic.yaml"
QUIET = ["logging.progress=false", "logging.tensorboard=false", "logging.plot=false"]


def tiny_config(out_dir, *overrides: str):
    """configs/train/qwen3vl_tiny_synthetic.yaml with quiet logging, `out_dir`, and `overrides` (a.b=c)."""
    from stvl_jax.train.config import load_train_config

    return load_train_config(TINY_TRAIN, [*QUIET, f"out_dir={out_dir}", *overrides])


def subprocess_env(devices: int = 8) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if "STVL_TEST_XLA_CACHE" in os.environ:
        env["JAX_COMPILATION_CACHE_DIR"] = os.environ["STVL_TEST_XLA_CACHE"]
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


def stvl(*args: str, devices: int = 8, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    """Run `python -m stvl_jax.cli ARGS` in the repository root."""
    return subprocess.run([sys.executable, "-m", "stvl_jax.cli", *args], cwd=REPO, env=subprocess_env(devices),
                          capture_output=True, text=True, timeout=timeout, **popen)


@pytest.fixture(scope="module")
def vos_set(tmp_path_factory):
    """A 6-video synthetic VOS set (entities that leave and come back) for the SAM2 trainer tests."""
    from data_pipelines.synthetic import generate_dataset
    from data_pipelines.vos import vos_synth_config

    root = tmp_path_factory.mktemp("vos")
    generate_dataset(str(root), vos_synth_config(num_videos=6, seed=3), workers=1)
    return str(root)


@pytest.fixture
def repo_root():
    return REPO


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """A per-session persistent XLA cache: identical programs (same config and mesh in several tests, the
    repeated subprocess runs) compile once. Semantics are unchanged; only compile time is saved."""
    import jax

    path = str(tmp_path_factory.mktemp("xla_cache"))
    os.environ["STVL_TEST_XLA_CACHE"] = path
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield path
