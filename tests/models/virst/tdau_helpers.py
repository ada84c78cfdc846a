"""A tiny Flax SAM2 video model for the TDAU tests: configs/models/sam2_tiny at 64 px (4x4 image embedding,
16x16 low-res masks), every parameter redrawn at random (zero-initialised embeddings and layer scales would hide
whole branches from an equivalence test)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx

IMAGE = 64


def tiny_config(stability: bool = True, **tracking):
    from stvl_jax.models.sam2.video_config import Sam2VideoConfig
    from stvl_jax.packaged import resolve_config

    d = yaml.safe_load(resolve_config("sam2_tiny", "models").read_text())
    d["image"]["vision"]["backbone"]["image_size"] = [IMAGE, IMAGE]
    e = IMAGE // 16
    d["image"]["vision"]["backbone_feature_sizes"] = [[4 * e, 4 * e], [2 * e, 2 * e], [e, e]]
    d["image"]["prompt_encoder"]["image_size"] = IMAGE
    d["memory_attention"]["rope_feat_sizes"] = [e, e]
    d["tracking"].update(tracking)
    d["image"]["mask_decoder"]["dynamic_multimask_via_stability"] = stability
    return Sam2VideoConfig.from_dict(d)


@functools.lru_cache(maxsize=None)
def tiny_model(seed: int = 0, stability: bool = True, **tracking):
    """The abstract model filled with random draws (no init program to compile): matrices and kernels
    N(0, 1/fan_in), norm weights and layer scales 1 + N(0, 0.3^2), other vectors N(0, 0.3^2)."""
    from stvl_jax.models.sam2.video_model import abstract_video_model

    graphdef, params, rest = nnx.split(abstract_video_model(tiny_config(stability, **tracking)), nnx.Param, ...)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    rng = np.random.default_rng(seed)
    new = []
    for path, x in leaves:
        names = [n for n in (str(getattr(k, "key", getattr(k, "name", k))).lower() for k in path) if n != "value"]
        noise = rng.standard_normal(x.shape).astype(np.float32)
        if names[-1] in ("weight", "scale") and any("norm" in n for n in names) or names[-1] == "scale":
            new.append(1.0 + 0.3 * noise)
        elif x.ndim >= 2 and x.shape[-2] > 1 and not any("norm" in n for n in names):
            new.append(noise / np.sqrt(np.prod(x.shape[:-1])))
        else:
            new.append(0.3 * noise)
    return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in new]), rest)
