"""Packaged presets and benchmarks (stvl_jax.packaged): names resolve from any directory, paths stay paths, and a
bad name or a foreign `configs` package is one clear error."""

import sys
from pathlib import Path

import pytest

from stvl_jax import packaged
from stvl_jax.cli import main
from stvl_jax.errors import ConfigError, UserError
from stvl_jax.train.config import load_train_config

REPO = Path(__file__).resolve().parents[1]


def test_a_bare_name_is_the_packaged_yaml_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert packaged.resolve_config("streamo_tiny", "train").samefile(REPO / "configs/train/streamo_tiny.yaml")
    assert packaged.resolve_config("qwen3vl_tiny", "models").samefile(REPO / "configs/models/qwen3vl_tiny.yaml")
    assert load_train_config("qwen3vl_tiny_synthetic", ["steps=3"]).steps == 3
    assert packaged.config_names("train") == sorted(p.stem for p in (REPO / "configs/train").glob("*.yaml"))
    assert "streamo_tiny" in packaged.config_names("train") and "qwen25vl_tiny" in packaged.config_names("models")


def test_a_path_is_read_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_train_config("configs/train/qwen3vl_tiny_synthetic.yaml").name == \
        load_train_config("qwen3vl_tiny_synthetic").name
    (tmp_path / "mine.yaml").write_text((REPO / "configs/train/qwen3vl_tiny_synthetic.yaml").read_text()
                                        .replace("steps: ", "steps: 7 #"))
    monkeypatch.chdir(tmp_path)
    assert load_train_config("mine.yaml").steps == 7
    with pytest.raises(ConfigError, match=r"config file 'configs/train/x.yaml' does not exist .*streamo_tiny"):
        load_train_config("configs/train/x.yaml")


def test_an_unknown_name_lists_the_packaged_ones(capsys):
    with pytest.raises(ConfigError, match=r"no packaged train config 'nope' .*'streamo_tiny'"):
        load_train_config("nope")
    assert main(["train", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "qwen3vl_tiny_synthetic" in err, err


def test_bench_lists_only_the_product_benchmarks(capsys):
    assert main(["bench", "list"]) == 0
    listed = capsys.readouterr().out.split("benchmarks:")[1].split()
    assert listed == packaged.benchmark_names()
    assert {"forward_vs_torch", "train_step", "pipeline_throughput", "stride_latency"} <= set(listed)
    assert "common" not in listed and not {"streamo_visual_probe", "binding_plateau"} & set(listed)


def test_a_foreign_configs_package_is_named_not_used(tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "configs", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"'configs' package imported from .* is not stvl-jax's"):
        packaged.config_names("train")
