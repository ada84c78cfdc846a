"""Shared fixtures: the tiny tokenizer, a small synthetic set, and a corpus of bad inputs."""

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from data_pipelines.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    from data_pipelines.synthetic import SynthConfig, generate_dataset

    out = str(tmp_path_factory.mktemp("synth"))
    generate_dataset(out, SynthConfig(num_videos=10, seed=3), workers=1)
    return out


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory, synth_dir):
    """Truncated mp4 (half the bytes), zero bytes, a text file named .mp4, a missing path, and a good one."""
    d = tmp_path_factory.mktemp("bad")
    good = os.path.join(synth_dir, "videos", "synth_00000.mp4")
    data = open(good, "rb").read()
    paths = {"good": str(d / "good.mp4"), "truncated": str(d / "truncated.mp4"), "zero": str(d / "zero.mp4"),
             "text": str(d / "text.mp4"), "missing": str(d / "missing.mp4")}
    shutil.copy(good, paths["good"])
    open(paths["truncated"], "wb").write(data[: len(data) // 2])
    open(paths["zero"], "wb").close()
    open(paths["text"], "w").write("this is not a video\n" * 20)
    return paths
