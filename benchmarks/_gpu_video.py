"""The video parts of `stvl bench gpu`: the STRIDE activation step, SAM2 tracking frames/s, VIRST end-to-end
frames/s. The pieces are the product's own (`benchmarks.stride_latency`, `benchmarks.sam2_tracking`, the VIRST
predictor `stvl_jax.infer.virst`), with random weights drawn on the device."""

from __future__ import annotations

import statistics
import tempfile
import time

import jax.numpy as jnp
import numpy as np

from benchmarks.common import random_qwen_vl
from benchmarks.sam2_tracking import jax_tracking_run
from benchmarks.stride_latency import synthetic_stream, time_stream
from stvl_jax import packaged
from stvl_jax.config_base import load_config
from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.models.sam2.video_config import Sam2VideoConfig, from_hf
from stvl_jax.models.sam2.video_model import init_video_model
from stvl_jax.models.virst.config import VirstConfig, load_virst_config

STRIDE_ANCHOR = "~113 ms (STRIDE-2B, its website); target <= 40 ms"
# facebookresearch/sam2 README, "Model Description" tables (speed on one A100): sam2_hiera_large 24.2 FPS eager,
# 30.2 FPS with the image encoder compiled (README at commit 05d9e57); since the 2024-12 release, 39.7 FPS with
# the whole model compiled (`vos_optimized`, torch 2.5.1, CUDA 12.4; README at commit 5994d56)
SAM2_ANCHOR = "30.2 FPS (SAM 2 Hiera-L, A100, encoder compiled; 24.2 eager, 39.7 fully compiled)"
VIRST_ANCHOR = "5.1 FPS (VIRST's 7B model, as its authors report it)"
VIRST_QUERY = "the person on the left who rides the bicycle past the parked car"
# the LLM ids the tiny tokenizer gives its special tokens (the VIRST part prompts with it: no download)
TOKEN_ID_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                   "eos_token_id", "pad_token_id")


def stride(sz, out) -> None:
    name = sz.figures("stride")[0]
    config = load_model_config(sz.stride_preset)
    model = random_qwen_vl(config, dtype=jnp.bfloat16 if sz.stride_dtype == "bfloat16" else jnp.float32)
    prompt, frames = synthetic_stream(config, sz.stride_window, sz.stride_frames, sz.stride_size)
    runs = time_stream(model, prompt, frames, chunk=sz.stride_chunk, max_window=sz.stride_max_window, steps=8,
                       mode="mega", runs=sz.stride_runs)
    # "with the cached prefix": the chunks that reuse their mega-window's prefill (the first one builds it)
    cached = [c for r in runs for c in r.chunks if not c.prefix_built]
    built = [c for r in runs for c in r.chunks if c.prefix_built]
    if not cached:
        raise RuntimeError(f"no chunk reused a prefix ({sz.stride_frames} frames, chunk {sz.stride_chunk})")
    step = statistics.median(c.latency_s for c in cached)
    per_fwd = statistics.median(c.latency_s / c.forwards for c in cached)
    tokens = (sz.stride_size // config.vision.patch_size) ** 2 // config.vision.merge_unit
    note = (f"median of {len(cached)} chunks ({cached[0].forwards} forwards each: retain + 8 steps, "
            f"{1e3 * per_fwd:.1f} ms per forward); a chunk that also prefills its {sz.stride_max_window}-frame "
            f"mega-window: {1e3 * statistics.median(c.latency_s for c in built):.0f} ms; {sz.stride_window} slots, "
            f"{sz.stride_chunk}-frame chunks, {sz.stride_size} px ({tokens} tokens per frame pair), "
            f"{sz.stride_dtype}")
    out.emit(name, 1e3 * step, "ms", STRIDE_ANCHOR, note=note, forward_ms=1e3 * per_fwd)


def sam2_config(sz):
    """Hiera-`sz.sam2_hiera` at `sz.sam2_size` px (the shapes of `benchmarks.sam2_tracking`, through
    transformers' config classes), or the packaged `sam2_tiny` preset for the smoke run."""
    if sz.sam2_hiera is None:
        return load_config(Sam2VideoConfig, packaged.resolve_config("sam2_tiny", "models"))
    from benchmarks.sam2_tracking import hf_video_config

    return from_hf(hf_video_config(sz.sam2_hiera, sz.sam2_size).to_dict())


def sam2(sz, out) -> None:
    name = sz.figures("sam2")[0]
    config = sam2_config(sz)
    size = config.image_size
    model = init_video_model(config, dtype=jnp.bfloat16 if sz.sam2_dtype == "bfloat16" else jnp.float32)
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((sz.sam2_frames, 3, size, size)).astype(np.float32)
    boxes = [np.asarray([0.1, 0.2, 0.5, 0.7], np.float32) * size]
    jax_tracking_run(model, pixels, boxes)  # compiles
    times = []
    for _ in range(sz.sam2_reps):
        if times and out.left() < 2 * sum(times[-(sz.sam2_frames - 1):]) + 3:
            break
        times += jax_tracking_run(model, pixels, boxes)[0]
    frame = statistics.median(times)
    label = f"Hiera-{sz.sam2_hiera}" if sz.sam2_hiera else "the sam2_tiny preset"
    out.emit(name, 1 / frame, "frames/s", SAM2_ANCHOR,
             note=f"{label} at {size} px, {sz.sam2_dtype}, 1 object boxed on frame 0, median of {len(times)} "
                  f"propagated frames ({1e3 * frame:.1f} ms each: encoder + memory attention + decoder + memory "
                  f"encoder)", frame_ms=1e3 * frame)


def virst_tokenizer(tmp: str):
    """The tiny tokenizer (`data_pipelines.tokenizer`, built here: no download) with [SEG] added."""
    from data_pipelines.tokenizer import build_tiny_tokenizer, open_tokenizer

    tok = open_tokenizer(build_tiny_tokenizer(tmp))
    tok.add_tokens(["[SEG]"])
    return tok


def virst_config(sz, seg_id: int) -> VirstConfig:
    """The packaged `virst_tiny` for the smoke run; else a `sz.lm_preset` Qwen3-VL + the SAM2 part's Hiera at
    `sz.sam2_size` px (`sam2_config`) with VIRST's default fusion sizes. The LLM takes the tiny tokenizer's
    special-token ids and [SEG] = `seg_id` (random weights: any ids in the vocabulary time the same)."""
    if sz.sam2_hiera is None:
        cfg = load_virst_config("virst_tiny")
    else:
        tiny = load_model_config("qwen3vl_tiny")
        llm = load_model_config(sz.lm_preset).replace(**{k: getattr(tiny, k) for k in TOKEN_ID_FIELDS})
        cfg = VirstConfig(llm=llm, sam2=sam2_config(sz))
    return cfg.replace(seg={**cfg.seg.to_dict(), "token_id": seg_id})


def virst(sz, out) -> None:
    """`VirstSegmenter.segment` on one clip of `sz.virst_frames` random frames and one expression, end to end
    (frame choice, Qwen-VL and SAM2 preprocessing, prompt, the device program, masks at the video's size)."""
    from stvl_jax.infer.virst import VirstSegmenter
    from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig
    from stvl_jax.models.virst.model import init_virst_model

    name = sz.figures("virst")[0]
    with tempfile.TemporaryDirectory(prefix="stvl_gpu_bench_") as tmp:
        tok = virst_tokenizer(tmp)
    config = virst_config(sz, tok.convert_tokens_to_ids("[SEG]"))
    dtype = jnp.bfloat16 if sz.virst_dtype == "bfloat16" else jnp.float32
    model = init_virst_model(config, dtype=dtype, param_dtype=dtype)
    model.sam2_preprocessing = Sam2PreprocessConfig(image_size=config.sam2.image_size)
    seg = VirstSegmenter(model, tok)
    frames = np.random.default_rng(0).integers(0, 256, (sz.virst_frames, *sz.virst_frame_hw, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    seg.segment(frames, VIRST_QUERY)  # compiles
    compile_s = time.perf_counter() - t0
    clips, hosts = [], []
    for _ in range(sz.virst_reps):
        if clips and out.left() < 2 * (clips[-1] + hosts[-1]) + 3:
            break
        t0 = time.perf_counter()
        clip = seg.clip_inputs(frames, VIRST_QUERY)  # the host side alone, for the note
        hosts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        seg.segment(frames, VIRST_QUERY)
        clips.append(time.perf_counter() - t0)
    total, host = statistics.median(clips), statistics.median(hosts)
    label = (f"Qwen3-VL {sz.lm_preset} + SAM2 Hiera-{sz.sam2_hiera} at {config.sam2.image_size} px"
             if sz.sam2_hiera else "the virst_tiny preset")
    h, w = sz.virst_frame_hw
    device_fps = sz.virst_frames / max(total - host, 1e-9)
    out.emit(name, sz.virst_frames / total, "frames/s", VIRST_ANCHOR,
             note=f"{label}, {sz.virst_dtype}; one {sz.virst_frames}-frame {h}x{w} clip, one expression "
                  f"({len(clip.vlm_indices)} frames, {clip.inputs.input_ids.shape[1]} tokens to the LLM, "
                  f"{len(clip.seg_indices)} SegPrompter frames, anchors {list(clip.anchor_frames)}): "
                  f"{1e3 * total:.0f} ms per clip (median of {len(clips)}), of which host preparation "
                  f"{1e3 * host:.0f} ms (the rest, device program + masks: {device_fps:.1f} frames/s); first call "
                  f"{compile_s:.0f} s", clip_s=total, host_s=host)
