"""The image path vs Meta's `sam2` package (the second reference) beyond the trunk: a tiny `ImageEncoder`
(Hiera + FpnNeck), `PromptEncoder` and `MaskDecoder` with random weights, their state dict converted by
`converters.sam2_keys.meta_image_to_hf` (which must fill every tensor of our model) and loaded through the key
map: FPN levels and position encodings, the dense image PE, point/mask prompt embeddings, and the decoder's mask
logits, IoU and object-score logits (multimask, and single mask with the dynamic fallback), fp32 within 1e-4."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sam2_helpers import nchw

torch = pytest.importorskip("torch")
pytest.importorskip("sam2.modeling.sam2_base")
pytestmark = pytest.mark.torch

TOL = 1e-4
D, IMAGE = 32, 64


@functools.lru_cache(maxsize=None)
def meta_parts():
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.prompt_encoder import PromptEncoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    torch.manual_seed(0)
    trunk = Hiera(embed_dim=8, num_heads=1, q_pool=3, stages=(1, 2, 3, 1), window_spec=(4, 4, 2, 1),
                  global_att_blocks=(4,), window_pos_embed_bkg_spatial_size=(4, 4))
    neck = FpnNeck(PositionEmbeddingSine(D), d_model=D, backbone_channel_list=[64, 32, 16, 8],
                   fpn_top_down_levels=[2, 3], fpn_interp_model="nearest")
    parts = dict(
        image_encoder=ImageEncoder(trunk, neck, scalp=1),
        sam_prompt_encoder=PromptEncoder(embed_dim=D, image_embedding_size=(4, 4), input_image_size=(IMAGE, IMAGE),
                                         mask_in_chans=16),
        sam_mask_decoder=MaskDecoder(
            transformer_dim=D, transformer=TwoWayTransformer(depth=2, embedding_dim=D, mlp_dim=64, num_heads=2),
            num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=24, use_high_res_features=True,
            pred_obj_scores=True, pred_obj_scores_mlp=True, iou_prediction_use_sigmoid=True,
            dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
            dynamic_multimask_stability_thresh=0.98))
    state = {}
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for prefix, module in parts.items():
            module.eval()
            for k, t in module.state_dict().items():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2 + (1.0 if "norm" in k and k.endswith("weight")
                                                                      or ".1.weight" in k and "upscaling" in k
                                                                      else 0.0))
                state[f"{prefix}.{k}"] = t.numpy().copy()
    state["no_mem_embed"] = (torch.randn(1, 1, D, generator=gen) * 0.2).numpy()
    return parts, state


def our_config():
    from stvl_jax.models.sam2.config import HieraConfig, Sam2Config, VisionConfig

    backbone = HieraConfig(hidden_size=8, blocks_per_stage=(1, 2, 3, 1), embed_dim_per_stage=(8, 16, 32, 64),
                           num_attention_heads_per_stage=(1, 2, 4, 8), window_size_per_stage=(4, 4, 2, 1),
                           global_attention_blocks=(4,), window_positional_embedding_background_size=(4, 4),
                           image_size=(IMAGE, IMAGE))
    return Sam2Config(vision=VisionConfig(backbone=backbone, backbone_channel_list=(64, 32, 16, 8),
                                          backbone_feature_sizes=((16, 16), (8, 8), (4, 4)), fpn_hidden_size=D),
                      prompt_encoder=dict(hidden_size=D, image_size=IMAGE, patch_size=16, mask_input_channels=16),
                      mask_decoder=dict(hidden_size=D, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=24))


@functools.lru_cache(maxsize=None)
def ours():
    from converters.sam2_keys import build_from_hf_state, meta_image_to_hf
    from stvl_jax.models.sam2.image_model import Sam2ImageModel

    cfg = our_config()
    hf, rest = meta_image_to_hf(meta_parts()[1], cfg)
    assert not rest
    return build_from_hf_state(lambda: Sam2ImageModel(cfg, rngs=nnx.Rngs(0)), cfg, hf)  # strict: every tensor


def test_meta_image_encoder_and_dense_pe():
    parts, _ = meta_parts()
    x = np.random.default_rng(0).normal(size=(2, 3, IMAGE, IMAGE)).astype(np.float32)
    with torch.no_grad():
        ref = parts["image_encoder"](torch.from_numpy(x))
        dense_pe = parts["sam_prompt_encoder"].get_dense_pe()
    levels, pos, _ = nnx.jit(lambda m, p: m.vision_encoder(p))(ours(), jnp.asarray(np.moveaxis(x, 1, -1)))
    for mine, theirs in zip(levels, ref["backbone_fpn"]):
        np.testing.assert_allclose(nchw(mine), theirs.detach().numpy(), atol=TOL, rtol=0)
    for mine, theirs in zip(pos, ref["vision_pos_enc"]):
        np.testing.assert_allclose(nchw(mine), theirs.detach().numpy(), atol=TOL, rtol=0)
    pe = nnx.jit(lambda m: m.image_positional_embeddings())(ours())
    np.testing.assert_allclose(nchw(pe[None]), dense_pe.detach().numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("with_mask", [False, True])
def test_meta_prompt_encoder(with_mask):
    parts, _ = meta_parts()
    rng = np.random.default_rng(1)
    points = rng.uniform(0, IMAGE, (2, 3, 2)).astype(np.float32)
    labels = np.asarray([[1, 0, -1], [1, 1, 0]], np.int32)
    masks = rng.normal(size=(2, 1, 16, 16)).astype(np.float32) if with_mask else None
    with torch.no_grad():
        sparse, dense = parts["sam_prompt_encoder"](
            points=(torch.from_numpy(points), torch.from_numpy(labels)), boxes=None,
            masks=None if masks is None else torch.from_numpy(masks))
    o_sparse, o_dense = nnx.jit(lambda m, p, lab, mk: m.prompt_encoder(p, lab, None, mk, batch_size=2))(
        ours(), jnp.asarray(points[:, None]), jnp.asarray(labels[:, None]),
        None if masks is None else jnp.asarray(masks))
    np.testing.assert_allclose(np.asarray(o_sparse)[:, 0], sparse.detach().numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(nchw(o_dense), dense.detach().numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("multimask", [True, False])
def test_meta_mask_decoder(multimask):
    parts, _ = meta_parts()
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(2, D, 4, 4)).astype(np.float32)
    s0 = rng.normal(size=(2, D // 8, 16, 16)).astype(np.float32)
    s1 = rng.normal(size=(2, D // 4, 8, 8)).astype(np.float32)
    sparse = rng.normal(size=(2, 3, D)).astype(np.float32)
    dense = rng.normal(size=(2, D, 4, 4)).astype(np.float32)
    with torch.no_grad():
        pe = parts["sam_prompt_encoder"].get_dense_pe()
        masks, iou, _, obj = parts["sam_mask_decoder"](
            torch.from_numpy(emb), pe, torch.from_numpy(sparse), torch.from_numpy(dense), multimask_output=multimask,
            repeat_image=False, high_res_features=[torch.from_numpy(s0), torch.from_numpy(s1)])

    def nhwc(x):
        return jnp.asarray(np.moveaxis(x, 1, -1))

    @nnx.jit
    def decode(m, e, sp, de, f0, f1):
        return m.mask_decoder(e, m.image_positional_embeddings()[None], sp, de, (f0, f1), multimask_output=multimask)

    out = decode(ours(), nhwc(emb), jnp.asarray(sparse[:, None]), nhwc(dense), nhwc(s0), nhwc(s1))
    np.testing.assert_allclose(np.asarray(out.masks)[:, 0], masks.detach().numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out.iou_scores)[:, 0], iou.detach().numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(out.object_score_logits)[:, 0], obj.detach().numpy(), atol=TOL, rtol=0)
