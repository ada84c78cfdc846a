"""Meta's original SAM2.1 checkpoints (`sam2.1_hiera_{tiny,small,base_plus,large}.pt`: `{"model": state dict}` of
the `sam2` package's `SAM2Base`) -> HF names and an HF `sam2_video` config.json dict, then the HF import path.

Only behind `--meta-pt`, and loaded with `torch.load(weights_only=True)`: no code runs while loading.
The Hiera size comes from `hiera_size` or from the tensor shapes (patch-embedding width + blocks per stage,
which tell the four released sizes apart); the config is what Meta's yaml files (`configs/sam2.1/*.yaml`)
build for that size, at `image_size` pixels (1024 in every released yaml).

Names: every HF tensor of the family's key map is looked up under its Meta name (`meta_name_of`): the Hiera
trunk through `sam2_keys.meta_trunk_to_hf`, the memory tensors through `sam2_video_keys.meta_name`, the neck,
prompt encoder and mask decoder here. A Meta tensor no HF tensor takes is an error, except the memory tensors
when importing the image model alone (`family="sam2"`, which says so).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from stvl_jax.errors import CheckpointError

# Meta's yaml: (embed_dim, num_heads, stages, global_att_blocks, window_spec, window_pos_embed_bkg_spatial_size)
HIERA_SIZES: dict[str, tuple[int, int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, int]]] = {
    "tiny": (96, 1, (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), (7, 7)),
    "small": (96, 1, (1, 2, 11, 2), (7, 10, 13), (8, 4, 14, 7), (7, 7)),
    "base_plus": (112, 2, (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), (14, 14)),
    "large": (144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), (7, 7)),
}
TRUNK = "image_encoder.trunk."
_MEMORY_PREFIXES = ("memory_encoder.", "memory_attention.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr",
                    "obj_ptr_proj.", "obj_ptr_tpos_proj.", "no_obj_embed_spatial", "mask_downsample.")


# ------------------------------------------------------------------------------------------ loading
def load_meta_state(path: str | Path) -> dict[str, Any]:
    """The "model" state dict of a Meta SAM2 checkpoint (torch tensors), or one `CheckpointError` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Meta SAM2 checkpoint {str(path)!r} does not exist or is not a file")
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"reading {str(path)!r} needs torch (pip install 'stvl-jax[torch]')") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError for forbidden globals, RuntimeError for corrupt zips
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"torch.load(weights_only=True) refused {str(path)!r}: {first}") from None
    state = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{str(path)!r} is not a Meta SAM2 checkpoint (expected a dict with a 'model' state "
                              f"dict of named tensors)")
    if TRUNK + "patch_embed.proj.weight" not in state or "sam_mask_decoder.iou_token.weight" not in state:
        raise CheckpointError(f"{str(path)!r} is not a Meta SAM2 checkpoint (no {TRUNK}patch_embed.proj.weight / "
                              f"sam_mask_decoder.iou_token.weight)")
    return state


def _numpy(t) -> np.ndarray:
    from converters.hf_checkpoint import _to_numpy

    return _to_numpy(t)


# ------------------------------------------------------------------------------------------ config
def infer_hiera_size(state: dict[str, Any], where: str) -> str:
    """The released size whose patch width and blocks per stage the checkpoint has."""
    width = int(state[TRUNK + "patch_embed.proj.weight"].shape[0])
    blocks = sorted({int(m[1]) for k in state if (m := re.match(rf"{re.escape(TRUNK)}blocks\.(\d+)\.", k))})
    starts = [i for i in blocks if f"{TRUNK}blocks.{i}.proj.weight" in state]  # width doubles: a new stage
    bounds = [0, *starts, len(blocks)]
    stages = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    for name, (dim, _, st, *_) in HIERA_SIZES.items():
        if dim == width and st == stages:
            return name
    raise CheckpointError(f"{where}: Hiera with patch width {width} and blocks per stage {stages} is none of the "
                          f"released SAM2.1 sizes {sorted(HIERA_SIZES)}")


def hf_config(state: dict[str, Any], size: str, image_size: int = 1024) -> dict[str, Any]:
    """The HF `sam2_video` config.json dict Meta's yaml builds for `size` (everything else: the sam2.1 yaml
    values, which are transformers' defaults), with the optional tensors' switches read from the state."""
    dim, heads, stages, global_blocks, windows, background = HIERA_SIZES[size]
    widths = [dim * 2 ** s for s in range(4)]
    d = int(state["sam_mask_decoder.iou_token.weight"].shape[1])
    e = image_size // 16
    backbone = {"model_type": "sam2_hiera_det_model", "hidden_size": dim, "num_attention_heads": heads,
                "blocks_per_stage": list(stages), "embed_dim_per_stage": widths,
                "num_attention_heads_per_stage": [heads * 2 ** s for s in range(4)],
                "window_size_per_stage": list(windows), "global_attention_blocks": list(global_blocks),
                "window_positional_embedding_background_size": list(background),
                "image_size": [image_size, image_size]}
    vision = {"model_type": "sam2_vision_model", "backbone_config": backbone,
              "backbone_channel_list": widths[::-1], "fpn_hidden_size": d,
              "backbone_feature_sizes": [[4 * e, 4 * e], [2 * e, 2 * e], [e, e]]}
    out = {"model_type": "sam2_video", "architectures": ["Sam2VideoModel"], "image_size": image_size,
           "vision_config": vision,
           "prompt_encoder_config": {"model_type": "sam2_prompt_encoder", "hidden_size": d, "image_size": image_size},
           "mask_decoder_config": {"model_type": "sam2_mask_decoder", "hidden_size": d},
           "memory_attention_rope_feat_sizes": [e, e],
           "num_maskmem": int(state["maskmem_tpos_enc"].shape[0]) if "maskmem_tpos_enc" in state else 7,
           "enable_occlusion_spatial_embedding": "no_obj_embed_spatial" in state,
           "enable_temporal_pos_encoding_for_object_pointers": "obj_ptr_tpos_proj.weight" in state}
    return out


# ------------------------------------------------------------------------------------------ names
_SIMPLE = tuple((re.compile(a), b) for a, b in (
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^(shared_image_embedding|prompt_encoder\.shared_embedding)\.positional_embedding$",
     "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "sam_prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "sam_prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "sam_prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "sam_prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "sam_prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^mask_decoder\.upscale_conv1\.", "sam_mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "sam_mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "sam_mask_decoder.output_upscaling.3."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "sam_mask_decoder.transformer.norm_final_attn."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.layer_norm(\d)\.", r"sam_mask_decoder.transformer.layers.\1.norm\2."),
    (r"^mask_decoder\.(.*)\.o_proj\.", r"sam_mask_decoder.\1.out_proj."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
))
# HF's MLPs name their first and last layers proj_in / proj_out and the hidden ones layers.{j}; Meta's are
# layers.0 .. layers.{n-1}
_MLP = re.compile(r"^(sam_mask_decoder\..*(?:mlp|mlps\.\d+|_head))\.(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$")


def meta_name_of(hf_name: str, meta_keys: set[str], trunk: dict[str, str] | None = None) -> str:
    """The Meta name of an HF SAM2 tensor. `trunk`: {HF name: Meta name} of the Hiera trunk (`trunk_names`);
    `prompt_encoder.point_embed.weight`, which Meta keeps as four (1, D) tensors, is the caller's."""
    from converters.sam2_video_keys import meta_name

    if hf_name.startswith("vision_encoder.backbone."):
        trunk = trunk_names(meta_keys) if trunk is None else trunk
        return trunk.get(hf_name, TRUNK + hf_name[len("vision_encoder.backbone."):])
    for pattern, repl in _SIMPLE:
        if pattern.search(hf_name):
            name = pattern.sub(repl, hf_name, count=1)
            m = _MLP.match(name)
            if m:
                prefix, which, hidden, leaf = m[1], m[2], m[3], m[4]
                if which == "proj_in":
                    index = 0
                elif which == "proj_out":
                    index = _last_index(meta_keys, prefix + ".layers")
                else:
                    index = int(hidden) + 1
                name = f"{prefix}.layers.{index}.{leaf}"
            return name
    name = meta_name(hf_name)
    m = re.match(r"^memory_encoder\.mask_downsampler\.final_conv\.(weight|bias)$", name)
    if m:  # Meta's Sequential: (conv, norm, activation) per layer, then the final 1x1 conv, its last module
        down = "memory_encoder.mask_downsampler.encoder"
        return f"{down}.{_last_index(meta_keys, down)}.{m[1]}"
    return name


def _last_index(meta_keys: set[str], prefix: str) -> int:
    found = [int(m[1]) for k in meta_keys if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", k))]
    return max(found) if found else 0


def trunk_names(meta_keys: set[str]) -> dict[str, str]:
    """{HF name: Meta name} of the checkpoint's Hiera trunk tensors."""
    from converters.sam2_keys import meta_trunk_to_hf

    return {meta_trunk_to_hf(k): k for k in meta_keys if k.startswith(TRUNK)}


def meta_to_hf_state(state: dict[str, Any], names: list[str], *, where: str, family: str) -> dict[str, np.ndarray]:
    """{HF name: numpy} for every HF name of the key map, from Meta's state dict. A Meta tensor no HF tensor
    takes is an error (the memory tensors are left out on purpose for the image model, `family="sam2"`)."""
    keys = set(state)
    trunk = trunk_names(keys)
    out, used = {}, set()
    for name in names:
        if name == "prompt_encoder.point_embed.weight":
            parts = sorted((k for k in keys if re.match(r"sam_prompt_encoder\.point_embeddings\.\d+\.weight$", k)),
                           key=lambda k: int(k.split(".")[2]))
            if not parts:
                raise CheckpointError(f"{where} lacks sam_prompt_encoder.point_embeddings.*")
            out[name] = np.concatenate([_numpy(state[k]) for k in parts], axis=0)
            used.update(parts)
            continue
        meta = meta_name_of(name, keys, trunk)
        if meta not in state:
            raise CheckpointError(f"{where} lacks {meta!r} (the HF tensor {name!r})")
        out[name] = _numpy(state[meta])
        used.add(meta)
    left = sorted(keys - used)
    if family == "sam2":
        left = [k for k in left if not k.startswith(_MEMORY_PREFIXES)]
    if left:
        raise CheckpointError(f"{where} has {len(left)} tensor(s) the SAM2.1 key map does not know, e.g. {left[:3]}")
    return out


# ------------------------------------------------------------------------------------------ import
def read_meta_pt(path: str | Path, *, hiera_size: str | None = None, family: str = "sam2_video",
                 image_size: int = 1024):
    """Meta's checkpoint -> `sam2_convert.Sam2Read` of `family` ("sam2_video": everything; "sam2": the image
    model, the memory tensors left out). The preprocessing is SAM2's default (1024 px, ImageNet mean/std)."""
    from converters.sam2_convert import config_from_hf, hf_names, sam2_from_hf_state
    from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig

    where = f"Meta SAM2 checkpoint {str(path)!r}"
    state = load_meta_state(path)
    inferred = infer_hiera_size(state, where)
    if hiera_size is not None and hiera_size != inferred:
        if hiera_size not in HIERA_SIZES:
            raise CheckpointError(f"--hiera-size {hiera_size!r} is not one of {sorted(HIERA_SIZES)}")
        raise CheckpointError(f"{where} is Hiera-{inferred} by its tensor shapes, not {hiera_size!r} (--hiera-size)")
    config_json = hf_config(state, inferred, image_size)
    if family == "sam2":
        config_json = {**config_json, "model_type": "sam2", "architectures": ["Sam2Model"]}
        config_json = {k: v for k, v in config_json.items()
                       if k in ("model_type", "architectures", "vision_config", "prompt_encoder_config",
                                "mask_decoder_config")}
    config = config_from_hf(family, config_json)
    hf_state = meta_to_hf_state(state, [n for n, _ in hf_names(family, config)], where=where, family=family)
    source = {"kind": "meta-sam2", "path": str(Path(path).absolute()), "hiera_size": inferred,
              "hf_config": config_json}
    return sam2_from_hf_state(config_json, hf_state, where=where, source=source,
                              preprocessing=Sam2PreprocessConfig(image_size=image_size), family=family)
