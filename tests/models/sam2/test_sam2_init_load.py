"""SAM2 image model: jitted random init (one program, optionally sharded), and the key map's checks (missing
tensor, wrong shape, unknown tensor -> one CheckpointError naming it; video tensors ignored on request)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stvl_jax.errors import CheckpointError
from stvl_jax.models.sam2.config import Sam2Config
from stvl_jax.nn.params import flat_params

TINY = Sam2Config.from_dict(dict(
    vision=dict(backbone=dict(hidden_size=8, blocks_per_stage=[1, 1, 1, 1], embed_dim_per_stage=[8, 16, 24, 32],
                              num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 2, 2, 1],
                              global_attention_blocks=[], image_size=[64, 64],
                              window_positional_embedding_background_size=[4, 4]),
                backbone_channel_list=[32, 24, 16, 8], backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
                fpn_hidden_size=16),
    prompt_encoder=dict(hidden_size=16, image_size=64, mask_input_channels=4),
    mask_decoder=dict(hidden_size=16, mlp_dim=16, num_attention_heads=2, iou_head_hidden_dim=16)))


@pytest.mark.slow  # compiling ~200 random initialisers takes XLA:CPU ~20-40 s
def test_init_is_one_program_and_runs():
    from stvl_jax.models.sam2.image_model import init_image_model
    from stvl_jax.sharding import make_mesh

    model = init_image_model(TINY, seed=3, mesh=make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    params = flat_params(model)
    assert all(isinstance(v.get_value(), jax.Array) for v in params.values())
    assert float(jnp.abs(params["mask_decoder/iou_token"].get_value()).sum()) > 0
    assert float(jnp.abs(params["vision_encoder/backbone/pos_embed"].get_value()).sum()) == 0  # as the reference
    box = jnp.asarray([[[4.0, 6.0, 40.0, 50.0]]])
    out = nnx.jit(lambda m, x, b: m(pixel_values=x, input_boxes=b))(model, jnp.zeros((1, 3, 64, 64)), box)
    assert out.pred_masks.shape == (1, 1, 3, 16, 16) and np.isfinite(np.asarray(out.pred_masks)).all()


def hf_like_state():
    from converters.sam2_keys import key_map

    rng = np.random.default_rng(0)
    return {e.hf: rng.normal(size=e.hf_shape).astype(np.float32) for e in key_map(TINY)}


def test_key_map_refuses_bad_checkpoints():
    from converters.sam2_keys import load_hf_state
    from stvl_jax.models.sam2.image_model import abstract_image_model

    state = hf_like_state()
    name = "mask_decoder.iou_prediction_head.proj_out.weight"
    with pytest.raises(CheckpointError, match="lacks 1 tensor"):
        load_hf_state(abstract_image_model(TINY), TINY, {k: v for k, v in state.items() if k != name})
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_hf_state(abstract_image_model(TINY), TINY, {**state, name: state[name][:, :-1]})
    with pytest.raises(CheckpointError, match="memory_encoder.x"):
        load_hf_state(abstract_image_model(TINY), TINY, {**state, "memory_encoder.x": np.zeros(2)})
    loaded = load_hf_state(abstract_image_model(TINY), TINY, {**state, "memory_encoder.x": np.zeros(2)},
                           ignore_unmapped=True)
    np.testing.assert_array_equal(np.asarray(loaded.mask_decoder.iou_token.get_value()),
                                  state["mask_decoder.iou_token.weight"])
    qkv = state["vision_encoder.backbone.blocks.2.attn.qkv.weight"]  # (3 * 24, 16) -> (16, 3, heads 2, 12)
    np.testing.assert_array_equal(np.asarray(loaded.vision_encoder.backbone.block_2.attn.qkv.kernel.get_value()),
                                  qkv.T.reshape(16, 3, 2, 12))
    conv = state["vision_encoder.neck.convs.0.weight"]  # (O, I, 1, 1) -> (1, 1, I, O)
    np.testing.assert_array_equal(np.asarray(loaded.vision_encoder.neck.conv_0.kernel.get_value()),
                                  conv.transpose(2, 3, 1, 0))
