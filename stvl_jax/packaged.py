"""What ships with stvl-jax besides code: the YAML presets and the benchmark scripts.

The repository's top-level `configs/` (`models/*.yaml` model presets, `train/*.yaml` train configs) and
`benchmarks/` are Python packages, installed with the wheel, and read here through `importlib.resources`, so the
same names work from a source checkout and from `pip install stvl-jax`, whatever the working directory:

    resolve_config("streamo_tiny", "train")          -> .../configs/train/streamo_tiny.yaml (packaged)
    resolve_config("my/run.yaml", "train")           -> my/run.yaml (a file path, relative to the cwd)
    config_names("models")                           -> ['qwen25vl_3b', 'qwen25vl_tiny', ...]
    benchmark_names()                                -> ['convert_2b', 'forward_vs_torch', ...]

A name is resolved as transformers' `from_pretrained` resolves a model id: an existing file wins; otherwise a
bare name (no directory, no `.yaml`/`.yml` suffix) is a packaged preset.
"""

from __future__ import annotations

import importlib
import importlib.resources
from pathlib import Path
from typing import Literal

from stvl_jax.errors import ConfigError, UserError

ConfigKind = Literal["models", "train"]
_MARKER = "STVL_JAX_PACKAGE_DATA"  # set in configs/__init__.py and benchmarks/__init__.py


def _package_dir(package: str) -> Path:
    """The directory of stvl-jax's top-level data package `package` (`configs` or `benchmarks`)."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise UserError(f"stvl-jax's {package!r} package is not importable: reinstall stvl-jax "
                        "(pip install .) or run from the repository root") from None
    if not getattr(module, _MARKER, False):  # e.g. a user's own `configs` package earlier on sys.path
        where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
        raise UserError(f"the {package!r} package imported from {where} is not stvl-jax's (it shadows the "
                        "installed one); rename it or remove its folder from sys.path")
    return Path(str(importlib.resources.files(package)))


def config_dir(kind: ConfigKind) -> Path:
    return _package_dir("configs") / kind


def config_names(kind: ConfigKind) -> list[str]:
    """The packaged presets of one kind: `models` (QwenVLConfig YAMLs) or `train` (TrainConfig YAMLs)."""
    return sorted(p.stem for p in config_dir(kind).glob("*.yaml"))


def is_bare_name(name_or_path: str) -> bool:
    p = Path(name_or_path)
    return p.suffix.lower() not in (".yaml", ".yml") and p.name == name_or_path and name_or_path not in ("", ".", "..")


def resolve_config(name_or_path: str | Path, kind: ConfigKind) -> Path:
    """An existing file path as given; else a bare name -> the packaged `configs/<kind>/<name>.yaml`.
    Raises `ConfigError` naming the input and the packaged names when neither exists."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if is_bare_name(name):
        packaged = config_dir(kind) / f"{name}.yaml"
        if packaged.is_file():
            return packaged
        raise ConfigError(f"no packaged {kind} config {name!r} and no such file; packaged: {config_names(kind)}")
    raise ConfigError(f"config file {name!r} does not exist (packaged {kind} configs, usable by name: "
                      f"{config_names(kind)})")


def benchmark_names() -> list[str]:
    """The product benchmarks: every module of the `benchmarks` package but `common` and private ones."""
    return sorted(p.stem for p in _package_dir("benchmarks").glob("*.py")
                  if p.stem != "common" and not p.stem.startswith("_"))
