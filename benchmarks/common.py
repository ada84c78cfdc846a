"""Shared benchmark utilities: machine description, interleaved timing, and the ~50M Qwen3-VL config."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def machine() -> str:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    dev = jax.devices()[0]
    return f"{os.cpu_count()} cores ({cpu}); JAX {jax.__version__} on {dev.platform} ({dev.device_kind})"


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each fn `reps` times, alternating between them so drift affects all equally. Returns seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def median(xs):
    return statistics.median(xs)


def random_qwen_vl(config, *, dtype, param_dtype=None, seed: int = 0):
    """A `QwenVLForConditionalGeneration` with the model's own random init, drawn in one jitted program on the
    default device (timing only: no download; a 2B model is drawn in seconds, not minutes of host RNG)."""
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
    from stvl_jax.models.sam2.image_model import init_jitted  # generic: any module constructor taking rngs

    return init_jitted(lambda rngs: QwenVLForConditionalGeneration(
        config, dtype=dtype, param_dtype=dtype if param_dtype is None else param_dtype, rngs=rngs), seed, None)


def qwen3_vl_50m_hf_config():
    """A ~50M-parameter Qwen3-VL (small vocab with custom placeholder ids, so most weights are in the towers)."""
    from transformers import Qwen3VLConfig

    text = dict(vocab_size=16384, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
                num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                rope_parameters=dict(rope_type="default", rope_theta=5e6, mrope_section=[12, 10, 10],
                                     mrope_interleaved=True))
    vision = dict(depth=6, hidden_size=384, intermediate_size=1536, num_heads=6, patch_size=16,
                  out_hidden_size=512, num_position_embeddings=2304, deepstack_visual_indexes=[1, 3])
    return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=16000, video_token_id=16001,
                         vision_start_token_id=16002, vision_end_token_id=16003, tie_word_embeddings=True)


def torch_qwen3_vl_50m(seed: int = 0):
    """(hf_config, transformers Qwen3VLForConditionalGeneration of `qwen3_vl_50m_hf_config`, sdpa attention)."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    hf_config = qwen3_vl_50m_hf_config()
    hf_config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return hf_config, Qwen3VLForConditionalGeneration(hf_config)
