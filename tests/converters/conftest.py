"""Fixtures for converter tests: tiny HF checkpoints written by transformers' own `save_pretrained`, and the
`stvl` CLI run in-process (exit code, stdout, stderr)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """make(family, tie=True, dtype=None, seed=0, **save_pretrained_kwargs) -> (directory, torch model)."""
    from qwen_vl_helpers import tiny_hf_config, torch_model

    cache = {}

    def make(family="qwen3_vl", *, tie=True, dtype=None, seed=0, **save_kwargs):
        key = (family, tie, str(dtype), seed, tuple(sorted(save_kwargs.items())))
        if key not in cache:
            model = torch_model(tiny_hf_config(family, tie=tie), seed=seed)
            if dtype is not None:
                model = model.to(dtype)
            directory = tmp_path_factory.mktemp(f"hf_{family}_{'tied' if tie else 'untied'}")
            model.save_pretrained(directory, **save_kwargs)
            cache[key] = (directory, model)
        return cache[key]

    return make


@pytest.fixture
def stvl(capsys):
    """stvl(*args) runs `stvl convert *args` in-process -> (exit code, stdout, stderr)."""
    from stvl_jax.cli import main

    def run(*args):
        capsys.readouterr()
        try:
            rc = main(["convert", *map(str, args)])
        except SystemExit as e:  # argparse usage errors
            rc = e.code
        out, err = capsys.readouterr()
        return rc, out, err

    return run
