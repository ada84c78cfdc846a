"""MFU FLOP counting against per-layer formulas written out by hand from the tiny configs' numbers, the training
multipliers, and the peak table."""

import numpy as np

from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.train.flops import (KernelSizes, forward_flops, peak_flops_per_device, train_multipliers,
                                  train_step_flops)


def test_qwen3_vl_flops_by_hand():
    # qwen3vl_tiny: vision d=64 i=128 depth 2 patch 16 (patch_dim 1536), 1 DeepStack tap; text D=128 I=256,
    # 4 layers, 4 query heads x 32, 2 kv heads, tied 512-row table
    c = load_model_config("qwen3vl_tiny")
    grids = np.array([[1, 4, 4], [2, 4, 8]])  # 16 + 64 = 80 patches, frames of 16, 32, 32 patches
    rows = [30, 21]
    got = forward_flops(c, KernelSizes.from_config(c), rows, grids)
    per_patch = 1536 * 64 + 2 * (3 * 64 * 64 + 64 * 64 + 64 * 128 + 128 * 64)  # embed, qkv, proj, fc1, fc2
    vis_attn = 2 * 4 * 64 * (16 ** 2 + 32 ** 2 + 32 ** 2)  # per block: QK^T + AV within each frame
    assert got["vision"] == 2 * per_patch * 80 + vis_attn
    per_merged = 2 * (256 * 256 + 256 * 128)  # merger + 1 DeepStack merger: fc1 4d->4d, fc2 4d->D
    assert got["merger"] == 2 * per_merged * 20
    per_token = 4 * (128 * 128 + 2 * 128 * 64 + 128 * 128 + 3 * 128 * 256)  # q, k+v, o, gate/up/down
    text_attn = sum(4 * 4 * 128 * n * (n + 1) / 2 for n in rows)  # over heads*head_dim = 128, causal
    assert got["llm"] == 2 * per_token * sum(rows) + text_attn
    assert got["head"] == 2 * 512 * 128 * sum(rows)  # tied table


def test_qwen2_5_vl_window_attention_flops_by_hand():
    # qwen25vl_tiny: patch 14 (patch_dim 1176), window 56 px -> 2x2 merged units = 16-patch windows; block 1 full
    c = load_model_config("qwen25vl_tiny")
    grids = np.array([[1, 8, 12]])  # merged 4 x 6 -> 2 x 3 windows of 16 patches
    got = forward_flops(c, KernelSizes.from_config(c), [10], grids)
    per_patch = 1176 * 64 + 2 * (3 * 64 * 64 + 64 * 64 + 3 * 64 * 128)  # gated MLP: gate, up, down
    vis_attn = 4 * 64 * (1 * 96 ** 2 + 1 * 6 * 16 ** 2)  # one full-attention block, one windowed
    assert got["vision"] == 2 * per_patch * 96 + vis_attn
    assert got["head"] == 2 * 128 * 512 * 10


def test_train_multipliers():
    assert train_multipliers(["vision", "merger", "llm", "embed"]) == {"vision": 3, "merger": 3, "llm": 3, "head": 3}
    # Streamo: frozen ViT costs only its forward
    assert train_multipliers(["merger", "llm", "embed"]) == {"vision": 1, "merger": 3, "llm": 3, "head": 3}
    # STRIDE: embed + llm; the mergers sit upstream of every trainable weight
    assert train_multipliers(["llm", "embed"]) == {"vision": 1, "merger": 1, "llm": 3, "head": 3}
    # only the merger: the frozen LLM and head still pass activation gradients back
    assert train_multipliers(["merger"]) == {"vision": 1, "merger": 3, "llm": 2, "head": 2}
    # only embeddings: the decoder passes gradients to the input table, the head trains
    assert train_multipliers(["embed"]) == {"vision": 1, "merger": 1, "llm": 2, "head": 3}
    fwd = {"vision": 1.0, "merger": 10.0, "llm": 100.0, "head": 1000.0}
    assert train_step_flops(fwd, train_multipliers(["merger"])) == 1 + 30 + 200 + 2000


def test_peak_table():
    assert peak_flops_per_device("TPU v5 lite") == 197e12
    assert peak_flops_per_device("TPU v5p") == 459e12
    assert peak_flops_per_device("TPU v6 lite") == 918e12
    assert peak_flops_per_device("TPU v4") == 275e12
    assert peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_per_device("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_per_device("cpu") is None
    assert peak_flops_per_device("cpu", override=1.5e11) == 1.5e11
