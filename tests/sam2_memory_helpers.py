"""Tiny random transformers `Sam2VideoModel`s (CPU, fp32) and weight transfer into our memory modules."""

from __future__ import annotations

import math

import numpy as np

# two shapes: (a) 2 heads, 8x8 grid, 3 memories; (b) 1 head, non-square 6x4 grid, 4 memories, 3 fuser blocks
SHAPES = {
    "a": dict(hidden=64, heads=2, layers=2, ffn=48, grid=(8, 8), num_maskmem=3, fuser_layers=2, fuser_dim=48,
              total_stride=16, stride=2),
    "b": dict(hidden=128, heads=1, layers=3, ffn=40, grid=(6, 4), num_maskmem=4, fuser_layers=3, fuser_dim=24,
              total_stride=4, stride=2),
}


def tiny_hf_config(shape: str = "a", **top):
    """A `Sam2VideoConfig` whose memory modules have the shape `SHAPES[shape]` (grid = (H, W) of the top-level
    features). The image path is tiny and unused here. memory_encoder_output_channels stays 64: transformers
    hard-codes the memory attention's key/value width to 64."""
    from transformers import Sam2VideoConfig

    s = SHAPES[shape]
    d, (h, w) = s["hidden"], s["grid"]
    vision = dict(backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=16, blocks_per_stage=[1, 1, 1, 1],
                                       embed_dim_per_stage=[16, 32, 64, 128],
                                       num_attention_heads_per_stage=[1, 1, 2, 2], global_attention_blocks=[2],
                                       window_size_per_stage=[4, 4, 4, 4], image_size=[128, 128],
                                       window_positional_embedding_background_size=[2, 2]),
                  backbone_channel_list=[128, 64, 32, 16],
                  backbone_feature_sizes=[[4 * h, 4 * w], [2 * h, 2 * w], [h, w]],
                  fpn_hidden_size=d)
    kw = dict(
        vision_config=vision, image_size=128,
        prompt_encoder_config=dict(hidden_size=d, image_size=128, patch_size=16),
        mask_decoder_config=dict(hidden_size=d, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=d),
        memory_attention_hidden_size=d, memory_attention_num_layers=s["layers"],
        memory_attention_num_attention_heads=s["heads"], memory_attention_feed_forward_hidden_size=s["ffn"],
        memory_attention_rope_feat_sizes=[w, h], memory_encoder_hidden_size=d, memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=d, mask_downsampler_total_stride=s["total_stride"],
        mask_downsampler_stride=s["stride"], memory_fuser_embed_dim=d,
        memory_fuser_intermediate_dim=s["fuser_dim"], memory_fuser_num_layers=s["fuser_layers"],
        num_maskmem=s["num_maskmem"], rope_parameters=dict(rope_type="axial", rope_theta=100.0 if shape == "b"
                                                            else 10000.0))
    kw.update(top)
    return Sam2VideoConfig(**kw)


def tiny_hf_model(config, seed: int = 0):
    """Sam2VideoModel(config) in eval mode with EVERY parameter redrawn at random (HF zero-inits some of them,
    e.g. the fuser layer scales, which would hide whole branches from a parity test). Matrices and kernels get
    std 1/sqrt(fan_in) (the scale of trained or default-initialised layers: activations stay O(1), so fp32
    rounding stays where a 1e-4 comparison can see real differences); vectors N(0, 0.3), norm weights and layer
    scales around 1."""
    import torch
    from transformers import Sam2VideoModel

    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(noise / math.sqrt(max(p[0].numel(), 1)))
            else:
                centre = 1.0 if ("norm" in name and name.endswith("weight")) or name.endswith(".scale") else 0.0
                p.copy_(centre + 0.3 * noise)
    return model


def state_numpy(module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_into(ours, entries, hf_state: dict[str, np.ndarray]) -> None:
    """Load HF tensors into our nnx module through the key map (paths relative to the module)."""
    from converters.qwen_vl_convert import load_flat_params
    from converters.sam2_video_keys import hf_to_flat
    from stvl_jax.nn.params import flat_params

    shapes = {k: tuple(v.get_value().shape) for k, v in flat_params(ours).items()}
    load_flat_params(ours, hf_to_flat(entries, hf_state, shapes))


def build_loaded(factory, entries, hf_state: dict[str, np.ndarray]):
    """Our module built abstractly (no random init: that is most of a tiny model's CPU time) and then filled
    with HF's tensors through the key map."""
    from flax import nnx

    ours = nnx.eval_shape(factory)
    load_into(ours, entries, hf_state)
    return ours


def jitted(module, **kwargs):
    """module(*args, **kwargs) as one jitted function of args (one compile instead of many eager op
    dispatches); kwargs are fixed (static ints, or constants)."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(module)

    @jax.jit
    def run(state, *args):
        return nnx.merge(graphdef, state)(*args, **kwargs)

    return lambda *args: run(state, *args)


def random_loaded(factory, keys, seed):
    """Random weights drawn in HF's layout (std 1/sqrt(fan_in), norm weights around 1) and loaded through the
    key map, so every kernel has the scale of a real layer whatever our axis order."""
    rng = np.random.default_rng(seed)
    hf = {}
    for e in keys:
        for name in e.hf_names():
            noise = rng.normal(size=e.hf_shape)
            if len(e.hf_shape) > 1 and e.hf_shape[0] > 1:
                hf[name] = noise / np.sqrt(np.prod(e.hf_shape[1:]))
            else:
                hf[name] = ("norm" in name and name.endswith("weight")) + 0.3 * noise
    return build_loaded(factory, keys, {k: v.astype(np.float32) for k, v in hf.items()})
