"""The import layers of docs/design.md, checked by import-linter's contracts in pyproject.toml: the tree keeps them,
and each contract does break on the import it exists to forbid (checked on a copy of the packages)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("stvl_jax", "data_pipelines", "converters")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.is_file():
        pytest.fail(f"{exe} not found: install the test extra (pip install -e '.[test]'), which has import-linter")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(exe), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def contract_states(stdout: str) -> dict[str, str]:
    """contract id-ish name -> KEPT | BROKEN, from lint-imports' summary (names may wrap over lines)."""
    summary = stdout.split("Contracts\n", 1)[-1].split("Contracts:", 1)[0]
    flat = " ".join(summary.split())
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"(.+?)\s*(KEPT|BROKEN)(?: \(\d+ ignored imports?\))?",
                                                                flat)}


def test_the_tree_keeps_every_contract():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 kept, 0 broken" in proc.stdout, proc.stdout


def _write(root: Path, rel: str, text: str, append: bool = True) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w") as f:
        f.write("\n" + text + "\n")


def test_each_contract_breaks_on_the_import_it_forbids(tmp_path):
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    host = tmp_path / "stvl_jax/models/qwen_vl/host"
    if not (host / "__init__.py").exists():
        _write(tmp_path, "stvl_jax/models/qwen_vl/host/__init__.py", '"""numpy-only host rules."""')
    # allowed: data_pipelines -> a host module that uses numpy and stvl_jax.errors
    _write(tmp_path, "stvl_jax/models/qwen_vl/host/ok_rule.py", "import numpy\nfrom stvl_jax.errors import InputError")
    _write(tmp_path, "data_pipelines/uses_host.py", "from stvl_jax.models.qwen_vl.host import ok_rule")
    proc = lint_imports(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # one forbidden import per contract
    _write(tmp_path, "stvl_jax/models/qwen_vl/vocab.py", "from stvl_jax.train import losses")
    _write(tmp_path, "stvl_jax/nn/norms.py", "import data_pipelines.video")
    _write(tmp_path, "converters/verify.py", "from stvl_jax.train import trainer")
    _write(tmp_path, "stvl_jax/demo/main.py", "from converters import qwen_vl_io")
    _write(tmp_path, "data_pipelines/video.py", "from stvl_jax import sharding\nimport flax")
    _write(tmp_path, "stvl_jax/models/qwen_vl/host/bad_rule.py",
           "import jax\nfrom stvl_jax.models.qwen_vl import config")
    proc = lint_imports(tmp_path)
    states = contract_states(proc.stdout)
    assert proc.returncode != 0 and len(states) == 6, proc.stdout
    assert set(states.values()) == {"BROKEN"}, proc.stdout
    for line in ("stvl_jax.models.qwen_vl.vocab -> stvl_jax.train", "stvl_jax.nn.norms -> data_pipelines.video",
                 "converters.verify -> stvl_jax.train", "stvl_jax.demo.main -> converters.qwen_vl_io",
                 "data_pipelines.video -> stvl_jax.sharding", "data_pipelines.video -> flax",
                 "stvl_jax.models.qwen_vl.host.bad_rule -> jax",
                 "stvl_jax.models.qwen_vl.host.bad_rule -> stvl_jax.models.qwen_vl.config"):
        assert line in proc.stdout, (line, proc.stdout)
