"""Jitted JAX forward vs transformers eager forward, same ~50M Qwen3-VL weights and inputs, on this machine.

One batch: a 16-frame video (8 temporal patches of 14x14 patches at 224 px) between two text spans. The two
forwards are timed interleaved; the script prints both medians, their ratio (torch / JAX, >1 = JAX faster)
and the max |Δlogit|. CPU numbers are only meaningful as a ratio.

    stvl bench forward_vs_torch [--reps 10] [--frames 16] [--size 224] [--dtype float32]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_batch(hf_config, frames: int, size: int, text_len: int = 32, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    vc = hf_config.vision_config
    grid_hw = size // vc.patch_size
    groups = frames // vc.temporal_patch_size
    per_group = grid_hw * grid_hw // vc.spatial_merge_size**2
    ids, types = list(rng.integers(0, 15000, text_len)), [0] * text_len
    for _ in range(groups):
        ids += list(rng.integers(0, 15000, 4)) + [hf_config.vision_start_token_id]
        ids += [hf_config.video_token_id] * per_group + [hf_config.vision_end_token_id]
        types += [0] * 5 + [2] * per_group + [0]
    ids += list(rng.integers(0, 15000, text_len))
    types += [0] * text_len
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2
    return dict(
        input_ids=np.asarray([ids], np.int64),
        attention_mask=np.ones((1, len(ids)), np.int64),
        mm_token_type_ids=np.asarray([types], np.int64),
        pixel_values_videos=rng.standard_normal((groups * grid_hw * grid_hw, patch_dim)).astype(np.float32),
        video_grid_thw=np.asarray([[groups, grid_hw, grid_hw]], np.int64),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx
    from transformers import Qwen3VLForConditionalGeneration

    from benchmarks.common import interleaved, machine, median, qwen3_vl_50m_hf_config
    from converters.qwen_vl_config import from_hf_dict
    from converters.qwen_vl_convert import load_flat_params, params_from_hf
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration, _jit_forward

    hf_config = qwen3_vl_50m_hf_config()
    hf_config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    tm = Qwen3VLForConditionalGeneration(hf_config).eval()
    n_params = sum(p.numel() for p in tm.parameters())
    config = from_hf_dict(hf_config.to_dict())
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    ours = QwenVLForConditionalGeneration(config, dtype=dtype, rngs=nnx.Rngs(0))
    load_flat_params(ours, params_from_hf(config, sd.keys(), sd.__getitem__))
    if args.dtype == "bfloat16":
        tm = tm.to(torch.bfloat16)

    batch = make_batch(hf_config, args.frames, args.size)
    tb = {k: torch.from_numpy(v) for k, v in batch.items()}
    if args.dtype == "bfloat16":
        tb["pixel_values_videos"] = tb["pixel_values_videos"].to(torch.bfloat16)
    inputs, _ = ours.prepare(batch)
    inputs = jax.tree.map(jnp.asarray, inputs)

    def run_jax():
        return jax.block_until_ready(_jit_forward(ours, inputs, False)[0])

    def run_torch():
        with torch.no_grad():
            return tm(**tb).logits

    times = interleaved({"jax": run_jax, "torch": run_torch}, reps=args.reps, warmup=1)
    diff = float(np.abs(np.asarray(run_jax(), np.float32) - run_torch().float().numpy()).max())
    tj, tt = median(times["jax"]), median(times["torch"])
    print(f"machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"model: Qwen3-VL {n_params / 1e6:.1f}M params; batch: 1 x {batch['input_ids'].shape[1]} tokens, "
          f"{args.frames}-frame video at {args.size}px ({batch['pixel_values_videos'].shape[0]} patches); "
          f"dtype {args.dtype}; {args.reps} interleaved reps")
    print(f"{'':8}{'median s':>10}{'min s':>10}")
    print(f"{'jax':8}{tj:10.4f}{min(times['jax']):10.4f}")
    print(f"{'torch':8}{tt:10.4f}{min(times['torch']):10.4f}")
    print(f"ratio torch/jax (median): {tt / tj:.2f}x   max |dlogit|: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
