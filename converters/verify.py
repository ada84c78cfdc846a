"""`stvl convert verify`: run transformers and stvl-jax on the same synthetic sample and compare logits.

The sample is built from the model config alone (no tokenizer or processor needed): two left-padded rows, one
with text + an image (non-square grid) + a video (two temporal groups), one with text only. Both models run in
fp32; the report gives max |Δlogit| over real tokens and KL(HF ‖ ours) of the next-token distributions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.config import QwenVLConfig

DEFAULT_ATOL = 1e-3  # fp32 vs fp32: conversion bugs show up as O(1) differences, numerics as ~1e-5
DEFAULT_MAX_KL = 1e-5


def synthetic_batch(config: QwenVLConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-processor-style batch (numpy) for `config`.

    Row 0: 6 text tokens, an image of (1, 2m, 3m) patches, 4 text tokens, a video of (2, 2m, 2m) patches,
    5 text tokens (m = spatial merge size). Qwen3-VL videos get one <vision_start> block per temporal group
    behind a 3-token "timestamp", as its processor writes them; Qwen2.5-VL gets one block and
    `second_per_grid_ts`. Row 1: 9 text tokens, left-padded.
    """
    rng = np.random.default_rng(seed)
    vc, m = config.vision, config.vision.spatial_merge_size
    special = {config.image_token_id, config.video_token_id, config.vision_start_token_id,
               config.vision_end_token_id}
    vocab = config.text.vocab_size
    if max(special) >= vocab:
        raise CheckpointError(f"vocab_size {vocab} is smaller than the vision token ids {sorted(special)}")
    pool = np.setdiff1d(np.arange(min(vocab, 50_000)), sorted(special))

    def text(n):
        ids = rng.choice(pool, n).tolist()
        return ids, [0] * n

    def block(token, kind, n):
        return [config.vision_start_token_id] + [token] * n + [config.vision_end_token_id], [0] + [kind] * n + [0]

    image_grid, video_grid = (1, 2 * m, 3 * m), (2, 2 * m, 2 * m)
    parts = [text(6), block(config.image_token_id, 1, int(np.prod(image_grid)) // m**2), text(4)]
    per_group = video_grid[1] * video_grid[2] // m**2
    if config.family == "qwen3_vl":
        for _ in range(video_grid[0]):
            parts += [text(3), block(config.video_token_id, 2, per_group)]
    else:
        parts.append(block(config.video_token_id, 2, per_group * video_grid[0]))
    parts.append(text(5))
    row0 = [sum((p[0] for p in parts), []), sum((p[1] for p in parts), [])]
    row1 = text(9)
    length = len(row0[0])
    ids = np.zeros((2, length), np.int64)
    mask = np.zeros((2, length), np.int64)
    types = np.zeros((2, length), np.int64)
    for b, (row_ids, row_types) in enumerate((row0, row1)):
        ids[b, length - len(row_ids):] = row_ids
        types[b, length - len(row_ids):] = row_types
        mask[b, length - len(row_ids):] = 1

    def pixels(grid):
        return rng.standard_normal((int(np.prod(grid)), vc.patch_dim)).astype(np.float32)

    batch = dict(input_ids=ids, attention_mask=mask, mm_token_type_ids=types,
                 pixel_values=pixels(image_grid), image_grid_thw=np.array([image_grid], np.int64),
                 pixel_values_videos=pixels(video_grid), video_grid_thw=np.array([video_grid], np.int64))
    if config.family == "qwen2_5_vl":
        batch["second_per_grid_ts"] = np.array([1.0], np.float32)
    return batch


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    max_abs_diff: float  # max |Δlogit| over real (unpadded) tokens
    mean_kl: float  # KL(HF ‖ ours), averaged over real tokens
    max_kl: float
    tokens: int

    def ok(self, atol: float = DEFAULT_ATOL, max_kl: float = DEFAULT_MAX_KL) -> bool:
        return self.max_abs_diff <= atol and self.max_kl <= max_kl


def compare_logits(hf_logits: np.ndarray, our_logits: np.ndarray, mask: np.ndarray) -> VerifyReport:
    """hf_logits, our_logits: (B, L, V); mask: (B, L), 1 = real token. KL in float64."""
    if hf_logits.shape != our_logits.shape:
        raise CheckpointError(f"logit shapes differ: HF {hf_logits.shape}, ours {our_logits.shape}")
    real = np.asarray(mask).astype(bool)
    a = np.asarray(hf_logits, np.float64)[real]
    b = np.asarray(our_logits, np.float64)[real]
    if not np.isfinite(b).all():
        return VerifyReport(float("inf"), float("inf"), float("inf"), int(real.sum()))
    log_p = a - np.logaddexp.reduce(a, axis=-1, keepdims=True)
    log_q = b - np.logaddexp.reduce(b, axis=-1, keepdims=True)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    return VerifyReport(float(np.abs(a - b).max()), float(kl.mean()), float(kl.max()), int(real.sum()))


def verify(hf_dir: str | Path, ckpt: str | Path, *, seed: int = 0) -> VerifyReport:
    """Load both sides in fp32 and compare on `synthetic_batch`. Needs torch (the `torch` extra)."""
    try:
        import torch
        import transformers
    except ImportError:
        raise CheckpointError("verify runs transformers on PyTorch: pip install 'stvl-jax[torch]'") from None
    from converters.hf_checkpoint import HFCheckpoint
    from converters.qwen_vl_config import ARCHITECTURES, from_hf_dict
    from stvl_jax.models.qwen_vl.loading import load_model, read_config

    with HFCheckpoint(hf_dir) as ck:
        hf_config = from_hf_dict(ck.config())
    config, _ = read_config(ckpt)
    a, b = ({**c.to_dict(), "architecture": ""} for c in (hf_config, config))
    if a != b:
        diff = sorted(k for k in a if a[k] != b.get(k))
        raise CheckpointError(f"{str(hf_dir)!r} and {str(ckpt)!r} describe different models (differ in {diff})")
    batch = synthetic_batch(config, seed)
    cls = getattr(transformers, ARCHITECTURES[config.family])
    hf_model = cls.from_pretrained(str(hf_dir), dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        hf_logits = hf_model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
    del hf_model
    import jax.numpy as jnp

    ours = load_model(ckpt, dtype=jnp.float32, param_dtype=jnp.float32)
    our_logits = np.asarray(ours(**batch).logits)
    return compare_logits(hf_logits, our_logits, batch["attention_mask"])
