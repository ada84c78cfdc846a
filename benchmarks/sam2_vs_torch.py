"""SAM2 image path, jitted JAX vs transformers eager, same weights and inputs, on this machine.

Two parts, each timed interleaved (torch / JAX medians and their ratio, >1 = JAX faster):
  encoder   pixels -> image embeddings (Hiera + FPN neck + the decoder's high-res projections)
  decoder   a box prompt on cached embeddings -> 3 mask logits, IoU, object score
plus the max |d mask logit| of the full forward. The model is transformers' default `Sam2Config` (Hiera-tiny)
with random weights, or `--hiera {tiny,small,base_plus,large}` shapes; `--size` shrinks the input (multiples of
256 keep every window tiling). CPU numbers are only meaningful as a ratio. The tracking step (memory attention +
memory encoder) belongs to the video model.

    stvl bench sam2_vs_torch [--size 1024] [--hiera tiny] [--batch 1] [--reps 5] [--dtype float32]
"""

from __future__ import annotations

import argparse
import sys

# Hiera sizes of the released SAM2.1 checkpoints (transformers' conversion script / Meta's yaml)
HIERA = {
    "tiny": dict(hidden_size=96, blocks_per_stage=[1, 2, 7, 2], global_attention_blocks=[5, 7, 9],
                 window_positional_embedding_background_size=[7, 7]),
    "small": dict(hidden_size=96, blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13],
                  window_positional_embedding_background_size=[7, 7]),
    "base_plus": dict(hidden_size=112, num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 3, 16, 3],
                      global_attention_blocks=[12, 16, 20], window_positional_embedding_background_size=[14, 14]),
    "large": dict(hidden_size=144, num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 6, 36, 4],
                  global_attention_blocks=[23, 33, 43], window_size_per_stage=[8, 4, 16, 8],
                  window_positional_embedding_background_size=[7, 7]),
}


def hf_config(hiera: str, size: int):
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    h = dict(HIERA[hiera])
    c0 = h["hidden_size"]
    dims = [c0, 2 * c0, 4 * c0, 8 * c0]
    backbone = Sam2HieraDetConfig(image_size=[size, size], embed_dim_per_stage=dims, **h)
    side = size // 4
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1],
                              backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]])
    cfg = Sam2Config(vision_config=vision, prompt_encoder_config=dict(image_size=size))
    cfg._attn_implementation = "sdpa"
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--hiera", default="tiny", choices=sorted(HIERA))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx
    from transformers import Sam2Model

    from benchmarks.common import interleaved, machine, median
    from converters.sam2_keys import build_from_hf_state
    from stvl_jax.models.sam2.config import from_hf
    from stvl_jax.models.sam2.image_model import Sam2ImageModel
    from stvl_jax.nn.bound_jit import bind_jit

    hc = hf_config(args.hiera, args.size)
    torch.manual_seed(0)
    tm = Sam2Model(hc).eval()
    with torch.no_grad():  # the reference zero-initialises the position tables: give them values
        for name, t in tm.state_dict().items():
            if "pos_embed" in name or "no_memory" in name:
                t.normal_(0, 0.02)
    n_params = sum(t.numel() for t in tm.parameters())
    config = from_hf(hc.to_dict())
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    ours = build_from_hf_state(lambda: Sam2ImageModel(config, dtype=dtype, rngs=nnx.Rngs(0)), config, sd)
    if args.dtype == "bfloat16":
        tm = tm.to(torch.bfloat16)
    tdt = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32

    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    boxes = np.tile(np.asarray([[[0.2, 0.25, 0.7, 0.8]]], np.float32) * args.size, (args.batch, 1, 1))
    jp, jb = jnp.asarray(pixels), jnp.asarray(boxes)
    tp, tb = torch.from_numpy(pixels).to(tdt), torch.from_numpy(boxes)

    # bound once (no per-call NNX graph traversal), as inference runtimes call the model
    encode = bind_jit(lambda m, x: m.get_image_embeddings(x), ours)
    decode = bind_jit(lambda m, e, b: m(image_embeddings=e, input_boxes=b).pred_masks, ours)
    emb = jax.block_until_ready(encode(jp))
    with torch.no_grad():
        t_emb = tm.get_image_embeddings(tp)

    def t_encode():
        with torch.no_grad():
            return tm.get_image_embeddings(tp)

    def t_decode():
        with torch.no_grad():
            return tm(image_embeddings=t_emb, input_boxes=tb).pred_masks

    enc = interleaved({"jax": lambda: jax.block_until_ready(encode(jp)), "torch": t_encode}, reps=args.reps)
    dec = interleaved({"jax": lambda: jax.block_until_ready(decode(emb, jb)), "torch": t_decode}, reps=args.reps)
    full = nnx.jit(lambda m, x, b: m(pixel_values=x, input_boxes=b).pred_masks)(ours, jp, jb)
    with torch.no_grad():
        ref = tm(pixel_values=tp, input_boxes=tb).pred_masks
    diff = float(np.abs(np.asarray(full, np.float32) - ref.float().numpy()).max())

    print(f"machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"model: SAM2 Hiera-{args.hiera} {n_params / 1e6:.1f}M params; {args.batch} image(s) at {args.size}px, "
          f"one box; dtype {args.dtype}; {args.reps} interleaved reps")
    print(f"{'':10}{'jax s':>10}{'torch s':>10}{'torch/jax':>11}")
    for name, t in (("encoder", enc), ("decoder", dec)):
        tj, tt = median(t["jax"]), median(t["torch"])
        print(f"{name:10}{tj:10.4f}{tt:10.4f}{tt / tj:10.2f}x")
    print(f"max |d mask logit| (full forward): {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
