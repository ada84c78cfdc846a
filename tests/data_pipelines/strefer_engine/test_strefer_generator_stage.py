"""Stages 3/4 through the real PyTorch masklet generator (`data_pipelines.strefer.masklets`: oracle detector on
the synthetic boxes, Meta's `sam2` with tiny random weights), run by the Beam pipeline. Skipped where the
generator package or sam2 is absent."""

import os
import shutil

import pytest

# Meta's hiera-t config cut to a tiny random model (as the generator's own plumbing tests)
META_TINY = ["++model.image_size=64", "++model.image_encoder.trunk.stages=[1,1,2,1]",
             "++model.image_encoder.trunk.global_att_blocks=[3]", "++model.memory_attention.num_layers=1"]


def test_pipeline_with_the_masklet_generator(strefer_set, tmp_path):
    pytest.importorskip("sam2")
    pytest.importorskip("data_pipelines.strefer.masklets.generator")
    from strefer_helpers import read_dataset
    from data_pipelines.strefer.config import EngineConfig
    from data_pipelines.strefer.run import run_engine

    root = tmp_path / "set"
    (root / "videos").mkdir(parents=True)
    (root / "annotations").mkdir()
    shutil.copy(os.path.join(strefer_set, "videos", "synth_00001.mp4"), root / "videos")
    shutil.copy(os.path.join(strefer_set, "annotations", "synth_00001.json"), root / "annotations")
    cfg = EngineConfig.from_dict({
        "masklets": "generator", "num_frames": 8, "segment_seconds": 16,
        "generator": {"torch_threads": 1, "detector": {"kind": "oracle", "oracle_jitter": 0.0},
                      "tracker": {"backend": "sam2", "model_overrides": META_TINY}}})
    s = run_engine(str(root / "videos"), str(tmp_path / "out"), cfg)
    c = s["counters"]
    assert c["clips"] == 1 and s["examples"] + s["dead_letters"] == 1
    if s["examples"]:  # random SAM2 weights: masks are noise, but every kept entity has a masklet of 8 frames
        (ex,) = read_dataset(str(tmp_path / "out"))
        m = ex["masklets"]
        assert m["anchor_frame"] is not None and len(m["scores"]) == len(m["entities"])
        for masks in m["entities"].values():
            assert len(masks) == 8
            assert all(r is None or isinstance(r["counts"], str) for r in masks)  # compressed COCO RLE
    print("\ncounters with the generator:", c)
