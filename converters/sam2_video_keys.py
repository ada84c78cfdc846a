"""Declarative HF `Sam2VideoModel` <-> stvl-jax key map: the image path (`converters.sam2_keys`, under our
`image/`) plus SAM2's video memory modules, with the same `Entry` and hooks as the image map:
    LINEAR  HF (out, in)          <-> ours (in, out...)          nn.Linear; heads split out of `out`
    CONV    HF (out, in, kh, kw)  <-> ours (kh, kw, in, out)     nn.conv.Conv2d
    VECTOR  HF any shape          <-> ours (same elements)       biases, norms, embeddings
Stacked layers (`layers=N`) gather HF's `layers.{i}` tensors into our leading `layers` axis.
HF prefixes default to the submodule names in `Sam2VideoModel` (`memory_encoder.`, `memory_attention.`, the
top-level memory parameters); ours to the attribute names of `models.sam2.video_model.Sam2VideoModel`.
`video_key_map` is the whole model's map; `load_hf_video_state` / `video_model_to_hf` move a whole HF state dict
in and out (export == the HF state dict, bit for bit).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters.sam2_keys import (CONV, LINEAR, VECTOR, Entry, entries_to_hf, entries_to_ours, key_map,
                                  prefixed)
from stvl_jax.models.sam2.memory_config import MemoryAttentionConfig, MemoryBankConfig, MemoryEncoderConfig
from stvl_jax.models.sam2.video_config import Sam2VideoConfig
from stvl_jax.nn.params import flat_params


class _Table:
    def __init__(self, hf_prefix: str, ours_prefix: str):
        self.hf, self.ours, self.entries = hf_prefix, ours_prefix, []

    def add(self, hf: str, ours: str, hook: str, shape, layers: int | None = None) -> None:
        self.entries.append(Entry(self.hf + hf, self.ours + ours, hook, tuple(int(n) for n in shape), layers))

    def linear(self, hf: str, ours: str, n_in: int, n_out: int, layers: int | None = None) -> None:
        self.add(hf + ".weight", ours + "/kernel", LINEAR, (n_out, n_in), layers)
        self.add(hf + ".bias", ours + "/bias", VECTOR, (n_out,), layers)

    def conv(self, hf: str, ours: str, n_in: int, n_out: int, k: int, layers: int | None = None) -> None:
        self.add(hf + ".weight", ours + "/kernel", CONV, (n_out, n_in, k, k), layers)  # depthwise: n_in = 1
        self.add(hf + ".bias", ours + "/bias", VECTOR, (n_out,), layers)

    def norm(self, hf: str, ours: str, n: int, layers: int | None = None) -> None:
        self.add(hf + ".weight", ours + "/weight", VECTOR, (n,), layers)
        self.add(hf + ".bias", ours + "/bias", VECTOR, (n,), layers)


def memory_encoder_keys(cfg: MemoryEncoderConfig, hf_prefix: str = "memory_encoder.",
                        ours_prefix: str = "memory_encoder/") -> list[Entry]:
    t = _Table(hf_prefix, ours_prefix)
    ch = 1
    for i in range(cfg.num_downsampler_layers):
        out = ch * cfg.downsampler_stride ** 2
        t.conv(f"mask_downsampler.layers.{i}.conv", f"mask_downsampler/layers_{i}/conv", ch, out,
               cfg.downsampler_kernel_size)
        t.norm(f"mask_downsampler.layers.{i}.layer_norm", f"mask_downsampler/layers_{i}/layer_norm", out)
        ch = out
    c, n = cfg.hidden_size, cfg.fuser_num_layers
    t.conv("mask_downsampler.final_conv", "mask_downsampler/final_conv", ch, cfg.downsampler_embed_dim, 1)
    t.conv("feature_projection", "feature_projection", c, c, 1)
    f, fo = "memory_fuser.layers.{i}.", "memory_fuser/layers/"
    t.conv(f + "depthwise_conv", fo + "depthwise_conv", 1, c, cfg.fuser_kernel_size, n)
    t.norm(f + "layer_norm", fo + "layer_norm", c, n)
    t.linear(f + "pointwise_conv1", fo + "pointwise_conv1", c, cfg.fuser_intermediate_dim, n)
    t.linear(f + "pointwise_conv2", fo + "pointwise_conv2", cfg.fuser_intermediate_dim, c, n)
    t.add(f + "scale", fo + "scale", VECTOR, (c,), n)
    t.conv("projection", "projection", c, cfg.output_channels, 1)
    return t.entries


def memory_attention_keys(cfg: MemoryAttentionConfig, hf_prefix: str = "memory_attention.",
                          ours_prefix: str = "memory_attention/") -> list[Entry]:
    t = _Table(hf_prefix, ours_prefix)
    d, i, n, kv = cfg.hidden_size, cfg.internal_dim, cfg.num_layers, cfg.kv_in_dim
    h, ho = "layers.{i}.", "layers/"
    for attn, kv_in in (("self_attn", d), ("cross_attn_image", kv)):
        for p, n_in, n_out in (("q", d, i), ("k", kv_in, i), ("v", kv_in, i), ("o", i, d)):
            t.linear(f"{h}{attn}.{p}_proj", f"{ho}{attn}/{p}_proj", n_in, n_out, n)
    t.linear(h + "linear1", ho + "linear1", d, cfg.ffn_hidden_size, n)
    t.linear(h + "linear2", ho + "linear2", cfg.ffn_hidden_size, d, n)
    for k in (1, 2, 3):
        t.norm(f"{h}layer_norm{k}", f"{ho}layer_norm{k}", d, n)
    t.norm("layer_norm", "layer_norm", d)
    return t.entries


def memory_embedding_keys(cfg: MemoryBankConfig, hf_prefix: str = "",
                          ours_prefix: str = "memory_embeddings/") -> list[Entry]:
    """HF `Sam2VideoModel`'s video-only top-level parameters (`MemoryEmbeddings`). `no_memory_embedding` is
    not here: the image model (`Sam2Model`) has it too, and its key map owns it."""
    t = _Table(hf_prefix, ours_prefix)
    d, m = cfg.hidden_dim, cfg.mem_dim
    t.add("memory_temporal_positional_encoding", "memory_temporal_positional_encoding", VECTOR,
          (cfg.num_maskmem, 1, 1, m))
    t.add("no_memory_positional_encoding", "no_memory_positional_encoding", VECTOR, (1, 1, d))
    t.add("no_object_pointer", "no_object_pointer", VECTOR, (1, d))
    t.linear("object_pointer_proj.proj_in", "object_pointer_proj/proj_in", d, d)
    t.linear("object_pointer_proj.layers.0", "object_pointer_proj/layer_0", d, d)
    t.linear("object_pointer_proj.proj_out", "object_pointer_proj/proj_out", d, d)
    if cfg.enable_temporal_pos_encoding_for_object_pointers:
        t.linear("temporal_positional_encoding_projection_layer", "temporal_positional_encoding_projection_layer",
                 d, m)
    if cfg.enable_occlusion_spatial_embedding:
        t.add("occlusion_spatial_embedding_parameter", "occlusion_spatial_embedding_parameter", VECTOR, (1, m))
    t.conv("mask_downsample", "mask_downsample", 1, 1, 4)
    return t.entries


# ------------------------------------------------------------------------------------------ Meta names
# HF name -> the original `sam2` package's (`SAM2Base` module tree, the `"model"` dict of sam2.1_hiera_*.pt):
# the same tensors and shapes under other names. Applied in order, first match only.
_HF_TO_META = tuple((re.compile(a), b) for a, b in (
    (r"^memory_encoder\.mask_downsampler\.layers\.(\d+)\.conv\.", lambda m: f"memory_encoder.mask_downsampler."
     f"encoder.{3 * int(m[1])}."),
    (r"^memory_encoder\.mask_downsampler\.layers\.(\d+)\.layer_norm\.", lambda m: f"memory_encoder.mask_downsampler."
     f"encoder.{3 * int(m[1]) + 1}."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.depthwise_conv\.", r"memory_encoder.fuser.layers.\1.dwconv."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.layer_norm\.", r"memory_encoder.fuser.layers.\1.norm."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.pointwise_conv(\d)\.",
     r"memory_encoder.fuser.layers.\1.pwconv\2."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.scale$", r"memory_encoder.fuser.layers.\1.gamma"),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_attention\.layers\.(\d+)\.layer_norm(\d)\.", r"memory_attention.layers.\1.norm\2."),
    (r"^memory_attention\.layers\.(\d+)\.(self_attn|cross_attn_image)\.o_proj\.",
     r"memory_attention.layers.\1.\2.out_proj."),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^object_pointer_proj\.proj_in\.", "obj_ptr_proj.layers.0."),
    (r"^object_pointer_proj\.layers\.(\d+)\.", lambda m: f"obj_ptr_proj.layers.{int(m[1]) + 1}."),
    (r"^object_pointer_proj\.proj_out\.", "obj_ptr_proj.layers.2."),
    (r"^temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
))


def meta_name(hf_name: str) -> str:
    """The `sam2` package's name of an HF `Sam2VideoModel` memory tensor (unchanged when it is the same)."""
    for pattern, repl in _HF_TO_META:
        if pattern.search(hf_name):
            return pattern.sub(repl, hf_name, count=1)
    return hf_name


def meta_entries(entries: list[Entry]) -> list[Entry]:
    """The same key map under the `sam2` package's names (the downsampler's final conv, whose Meta index
    depends on the layer count, is renamed from its position after the last downsampler layer)."""
    out = []
    n_down = sum(1 for e in entries if re.search(r"mask_downsampler\.layers\.\d+\.conv\.weight$", e.hf))
    for e in entries:
        if e.layers:
            names = [meta_name(n) for n in e.hf_names()]
            hf = re.sub(r"\.(\d+)\.", ".{i}.", names[0], count=1) if len(names) else e.hf
        else:
            hf = meta_name(e.hf).replace("mask_downsampler.final_conv.", f"mask_downsampler.encoder.{3 * n_down}.")
        out.append(dataclasses.replace(e, hf=hf))
    return out


# ------------------------------------------------------------------------------------------ whole model
def video_key_map(config: Sam2VideoConfig) -> list[Entry]:
    """Every tensor of HF `Sam2VideoModel`'s state dict <-> our `Sam2VideoModel` params."""
    image = [dataclasses.replace(e, ours="image/" + e.ours) for e in key_map(config.image)]
    return (image + memory_encoder_keys(config.memory_encoder) + memory_attention_keys(config.memory_attention)
            + memory_embedding_keys(config.memory_bank))


def load_hf_video_state(model: nnx.Module, config: Sam2VideoConfig, hf_state: Mapping[str, np.ndarray], *,
                        prefix: str = "", ignore_unmapped: bool = False) -> nnx.Module:
    """Write an HF `Sam2VideoModel` state dict into `model` (built or abstract; in place, keeping each param's
    dtype). prefix: `model` is the sub-module at this path of ours (its HF tensors only)."""
    params = flat_params(model)
    shapes = {k: tuple(v.get_value().shape) for k, v in params.items()}
    values = entries_to_ours(prefixed(video_key_map(config), prefix), dict(hf_state), shapes,
                             ignore_unmapped=ignore_unmapped or bool(prefix), what="SAM2 video")
    for k, v in params.items():
        v.set_value(jnp.asarray(values[k], dtype=v.get_value().dtype))
    return model


def video_model_to_hf(model: nnx.Module, config: Sam2VideoConfig) -> dict[str, np.ndarray]:
    """The HF `Sam2VideoModel` state dict (numpy) of our model."""
    params = flat_params(model)
    return entries_to_hf(video_key_map(config), lambda path: np.asarray(params[path].get_value()))


# ------------------------------------------------------------------------------------------ tensors
def hf_to_flat(entries: list[Entry], hf: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
               ) -> dict[str, np.ndarray]:
    """{our path: array} from HF tensors `hf` (name -> array) through `entries` (names beyond the entries are
    ignored: the caller owns the whole checkpoint); missing tensors and shape mismatches raise
    `CheckpointError`."""
    return entries_to_ours(entries, dict(hf), dict(shapes), ignore_unmapped=True, what="SAM2 video")


def flat_to_hf(entries: list[Entry], get_param: Callable[[str], np.ndarray]) -> dict[str, np.ndarray]:
    """{HF name: tensor} from our params (get_param(path) -> array), the inverse of `hf_to_flat`."""
    return entries_to_hf(entries, get_param)


__all__ = ["CONV", "LINEAR", "VECTOR", "Entry", "MemoryAttentionConfig", "MemoryBankConfig", "MemoryEncoderConfig",
           "flat_to_hf", "hf_to_flat", "load_hf_video_state", "memory_attention_keys", "memory_embedding_keys",
           "memory_encoder_keys", "meta_entries", "meta_name", "video_key_map", "video_model_to_hf"]
