"""The four released SAM2.1 trunks (Meta's `sam2/configs/sam2.1/*.yaml`: tiny, small, base+, large): our Hiera
config from each, its key-map tensor shapes == Meta's `hieradet.Hiera` built on torch's meta device (no memory),
and the abstract forward of the whole image model at 1024 px (`nnx.eval_shape`, nothing computed) gives the
reference feature and mask shapes, in fp32 and bf16."""

import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
import yaml
from flax import nnx

torch = pytest.importorskip("torch")
hieradet = pytest.importorskip("sam2.modeling.backbones.hieradet")
pytestmark = pytest.mark.torch

CONFIGS = Path(hieradet.__file__).parents[2] / "configs" / "sam2.1"
SIZES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}


def trunk_args(size):
    model = yaml.safe_load((CONFIGS / f"sam2.1_hiera_{size}.yaml").read_text())["model"]
    trunk = {k: v for k, v in model["image_encoder"]["trunk"].items() if k != "_target_"}
    defaults = {k: p.default for k, p in inspect.signature(hieradet.Hiera).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **trunk}, model["image_encoder"]["neck"]


def our_config(size):
    from stvl_jax.models.sam2.config import HieraConfig, Sam2Config, VisionConfig

    args, neck = trunk_args(size)
    n = len(args["stages"])
    dims = [int(args["embed_dim"] * args["dim_mul"] ** s) for s in range(n)]
    backbone = HieraConfig(hidden_size=args["embed_dim"], blocks_per_stage=args["stages"], embed_dim_per_stage=dims,
                           num_attention_heads_per_stage=[int(args["num_heads"] * args["head_mul"] ** s)
                                                          for s in range(n)],
                           window_size_per_stage=args["window_spec"], global_attention_blocks=args["global_att_blocks"],
                           num_query_pool_stages=args["q_pool"], query_stride=args["q_stride"],
                           window_positional_embedding_background_size=args["window_pos_embed_bkg_spatial_size"])
    assert list(neck["backbone_channel_list"]) == dims[::-1]
    return Sam2Config(vision=VisionConfig(backbone=backbone, backbone_channel_list=tuple(dims[::-1]),
                                          fpn_top_down_levels=neck["fpn_top_down_levels"]))


@pytest.mark.parametrize("size", list(SIZES))
def test_released_trunk_shapes_match_meta(size, monkeypatch):
    from converters.sam2_keys import key_map, meta_trunk_to_hf

    args, _ = trunk_args(size)
    linspace = torch.linspace  # the stochastic-depth schedule is read with .item(): keep it off the meta device
    monkeypatch.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
    with torch.device("meta"):
        meta = hieradet.Hiera(**{k: v for k, v in args.items() if k != "weights_path"})
    theirs = {meta_trunk_to_hf("image_encoder.trunk." + k): tuple(v.shape) for k, v in meta.state_dict().items()}
    ours = {e.hf: e.hf_shape for e in key_map(our_config(size)) if e.hf.startswith("vision_encoder.backbone.")}
    assert ours == theirs


@pytest.mark.parametrize("size, dtype", [("t", jnp.float32), ("l", jnp.bfloat16)])
def test_abstract_forward_at_1024(size, dtype):
    from stvl_jax.models.sam2.image_model import abstract_image_model

    model = abstract_image_model(our_config(size), dtype=dtype)
    pixels = jax.ShapeDtypeStruct((1, 3, 1024, 1024), jnp.float32)
    points = jax.ShapeDtypeStruct((1, 2, 1, 2), jnp.float32)
    labels = jax.ShapeDtypeStruct((1, 2, 1), jnp.int32)
    out = nnx.eval_shape(lambda m, x, p, lab: m(pixel_values=x, input_points=p, input_labels=lab), model, pixels,
                         points, labels)
    assert out.pred_masks.shape == (1, 2, 3, 256, 256) and out.pred_masks.dtype == dtype
    assert out.iou_scores.shape == (1, 2, 3) and out.object_score_logits.shape == (1, 2, 1)
    assert [e.shape for e in out.image_embeddings] == [(1, 256, 256, 32), (1, 128, 128, 64), (1, 64, 64, 256)]
