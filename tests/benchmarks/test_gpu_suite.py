"""`stvl bench gpu`: the one-run GPU suite. The smoke run (tiny shapes on the CPU, every part, two fake CPU devices
so that the sharded check runs) is slow on a shared 2-core machine (compiles); the fast tests check the deadline
machinery, the datasheet tables and the Hiera-L configuration the GPU run uses."""

import json

import pytest

from benchmarks import gpu
from benchmarks._gpu_part import FULL, HBM_BYTES_PER_S, PEAK_SOURCE, SMOKE, lookup
from stvl_jax.train.flops import peak_flops_per_device


def test_datasheet_tables_name_the_device_kinds_jax_reports():
    # NVIDIA datasheets: H100 SXM 3.35 TB/s, H100 PCIe 2.0 TB/s, H200 4.8 TB/s; bf16 dense 989 TFLOP/s (SXM, H200)
    assert lookup(HBM_BYTES_PER_S, "NVIDIA H100 80GB HBM3")[0] == 3.35e12
    assert lookup(HBM_BYTES_PER_S, "NVIDIA H100 PCIe")[0] == 2.0e12
    assert lookup(HBM_BYTES_PER_S, "NVIDIA H200")[0] == 4.8e12
    assert lookup(HBM_BYTES_PER_S, "cpu") is None
    assert peak_flops_per_device("NVIDIA H100 80GB HBM3") == peak_flops_per_device("NVIDIA H200") == 989e12
    # the MFU note says which figure was used; a PCIe card is told that 989 is the SXM figure (PCIe: 756)
    assert "SXM" in lookup(PEAK_SOURCE, "NVIDIA H100 80GB HBM3")[0] and "H200" in lookup(PEAK_SOURCE, "NVIDIA H200")[0]
    assert "756" in lookup(PEAK_SOURCE, "NVIDIA H100 PCIe")[0]


def test_a_part_past_its_deadline_is_reported_timed_out_and_the_suite_goes_on(tmp_path, capsys):
    out = tmp_path / "r.json"
    # 2 s cannot even import JAX: both parts are killed (virst's share is 100 / 160 of the 2 s, check the rest)
    assert gpu.main(["--smoke", "--parts", "virst,check", "--budget", "2", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    by_name = {r["name"]: r for r in doc["figures"]}
    assert list(by_name) == ["VIRST end to end"] + SMOKE.figures("check")
    for name in by_name:
        assert by_name[name]["status"].startswith("timed out") and by_name[name]["value"] is None
    printed = capsys.readouterr().out
    assert all(name in printed for name in by_name) and "timed out" in printed


def test_an_unknown_part_is_one_line(capsys):
    assert gpu.main(["--parts", "train,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nope'" in err


def test_the_gpu_run_tracks_sam2_hiera_large_at_1024():
    pytest.importorskip("transformers")
    from benchmarks._gpu_video import sam2_config

    cfg = sam2_config(FULL)
    b = cfg.image.vision.backbone
    # Meta's sam2_hiera_l.yaml: embed_dim 144, heads 2, stages [2, 6, 36, 4], global blocks [23, 33, 43],
    # window spec [8, 4, 16, 8]; 1024 px input
    assert cfg.image_size == 1024 and tuple(b.embed_dim_per_stage) == (144, 288, 576, 1152)
    assert tuple(b.blocks_per_stage) == (2, 6, 36, 4) and tuple(b.global_attention_blocks) == (23, 33, 43)
    assert tuple(b.window_size_per_stage) == (8, 4, 16, 8)


@pytest.mark.slow
def test_smoke_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "r.json"
    assert gpu.main(["--smoke", "--budget", "1500", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["smoke"] and doc["device"]["platform"] == "cpu" and doc["device"]["count"] == 2
    by_name = {r["name"]: r for r in doc["figures"]}
    expected = [n for p in gpu.PARTS for n in SMOKE.figures(p)]
    assert list(by_name) == expected
    for name, rec in by_name.items():
        if name.startswith("train MFU"):  # no datasheet peak for a CPU: timed, MFU undefined
            assert rec["status"].startswith("ok (no peak") and rec["step_s"] > 0 and rec["flops"] > 0
        else:
            assert rec["status"] == "ok" and rec["value"] is not None, rec
    assert by_name["sharded vs 1 device (grads)"]["value"] <= 1e-5  # two fake CPU devices
    assert 0.0 < by_name["bf16 vs fp32 logits"]["value"] < 0.5
    virst = by_name["VIRST end to end"]  # 4 frames of the tiny preset: a clip takes at least the host preparation
    assert virst["unit"] == "frames/s" and 0 < virst["host_s"] <= virst["clip_s"]
    assert virst["value"] == pytest.approx(4 / virst["clip_s"])


def test_every_part_resolves_what_it_uses():
    # the parts import the product pieces at module level: a renamed function or module fails here, not on a GPU
    from benchmarks import _gpu_lm, _gpu_part, _gpu_video

    for part in gpu.PARTS:
        assert SMOKE.figures(part) and len(FULL.figures(part)) == len(SMOKE.figures(part))
    assert all(callable(f) for f in (_gpu_lm.train, _gpu_lm.decode, _gpu_lm.check, _gpu_video.stride,
                                     _gpu_video.sam2, _gpu_video.virst, _gpu_part.main))


def test_the_gpu_run_segments_with_a_2b_qwen3_vl_and_sam2_hiera_large():
    pytest.importorskip("transformers")
    from benchmarks._gpu_video import virst_config
    from stvl_jax.models.qwen_vl.presets import load_model_config

    cfg = virst_config(FULL, 512)
    # Qwen3-VL-2B-Instruct config.json: 28 layers of width 2048, vision depth 24; the LLM's special ids are the
    # tiny tokenizer's (data_pipelines.tokenizer.TINY_TOKEN_IDS: vision_start 3, vision_end 4, image 5, video 6)
    assert cfg.llm.text == load_model_config("qwen3vl_2b").text and cfg.llm.vision.depth == 24
    assert (cfg.llm.vision_start_token_id, cfg.llm.vision_end_token_id, cfg.llm.image_token_id,
            cfg.llm.video_token_id) == (3, 4, 5, 6) and cfg.seg.token_id == 512
    b = cfg.sam2.image.vision.backbone
    assert cfg.sam2.image_size == 1024 and tuple(b.blocks_per_stage) == (2, 6, 36, 4)
    # VIRST's fusion (model/seg_prompter.py): 256-wide prompts, SAM2's 64 x 64 embedding down to 8 x 8, 10 [SEG]
    assert cfg.prompter.token_dim == 256 and cfg.memory_grid == 8 and cfg.seg.per_video == 10
    assert (FULL.virst_frames, FULL.virst_dtype) == (32, "bfloat16")

