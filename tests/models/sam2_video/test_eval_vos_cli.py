"""`stvl eval vos`: the CLI's plumbing with a stand-in segmenter (fast), and with a tiny SAM2 checkpoint (slow)."""

from __future__ import annotations

import json

import pytest

from data_pipelines.synthetic import generate_dataset
from data_pipelines.vos import vos_synth_config
from stvl_jax.cli import main


@pytest.fixture(scope="module")
def vos_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("vos")
    generate_dataset(str(root), vos_synth_config(num_videos=6, seed=2), workers=1)
    return str(root)


def test_cli_writes_metrics_and_plots_with_the_controls(vos_set, tmp_path, monkeypatch, capsys):
    import stvl_jax.eval.vos_eval as ve
    import stvl_jax.infer.segment_cli as sc

    monkeypatch.setattr(sc, "load_sam2_video", lambda ckpt: "model")
    monkeypatch.setattr(ve, "sam2_segmenter", lambda model: lambda clip, prompts: clip.masks.copy())
    out = tmp_path / "out"
    assert main(["eval", "vos", "--ckpt", "x", "--data", vos_set, "--split", "train", "--frames", "6",
                 "--frame-stride", "2", "--limit", "3", "--out", str(out)]) == 0
    res = json.load(open(out / "vos_metrics.json"))
    assert res["clips"] == 3 and res["model"]["overall"]["JF"] == pytest.approx(1.0)
    assert res["box_copy"]["overall"]["JF"] < 1.0 and "black_frames" in res
    assert (out / "vos_jf_per_case.png").exists() and (out / "vos_per_frame.png").exists()
    printed = capsys.readouterr().out
    assert "vos model: J&F 1.000" in printed and "vos box_copy: J&F" in printed


def test_an_unknown_split_is_one_line(vos_set, tmp_path, capsys):
    assert main(["eval", "vos", "--ckpt", "x", "--data", vos_set, "--split", "nope", "--out", str(tmp_path)]) == 2
    assert "no split 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_a_tiny_sam2_checkpoint(vos_set, tmp_path, capsys):
    pytest.importorskip("torch")
    from stvl_jax.models.sam2.loading import save_model
    from video_helpers import flax_video_model

    ckpt = save_model(flax_video_model(), None, tmp_path / "ckpt")
    out = tmp_path / "out"
    assert main(["eval", "vos", "--ckpt", str(ckpt), "--data", vos_set, "--split", "train", "--frames", "4",
                 "--frame-stride", "2", "--limit", "1", "--out", str(out)]) == 0
    res = json.load(open(out / "vos_metrics.json"))
    assert res["clips"] == 1 and 0.0 <= res["model"]["overall"]["JF"] <= 1.0
