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


@pytest.mark.torch
def test_load_hf_directory(tmp_path):
    """transformers `save_pretrained` directories (Sam2Model, and Sam2VideoModel whose memory tensors are left
    out) load with every image tensor bit-exact; a config of another model is one clear error."""
    torch = pytest.importorskip("torch")
    import transformers
    from sam2_helpers import hf_config, hf_state, our_config, torch_model

    from converters.sam2_keys import load_hf_image_model, model_to_hf
    from stvl_jax.errors import ConfigError

    ref = torch_model("b")
    ref.save_pretrained(tmp_path / "image")
    config, model = load_hf_image_model(tmp_path / "image")
    assert config == our_config("b")
    exported = model_to_hf(model, config)
    for k, v in hf_state(ref).items():
        np.testing.assert_array_equal(exported[k], v, err_msg=k)

    image = hf_config("b").to_dict()
    torch.manual_seed(0)
    video = transformers.Sam2VideoModel(transformers.Sam2VideoConfig(
        vision_config=hf_config("b").vision_config, prompt_encoder_config=image["prompt_encoder_config"],
        mask_decoder_config=image["mask_decoder_config"], image_size=64, memory_attention_hidden_size=48,
        memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=32, memory_encoder_hidden_size=48,
        mask_downsampler_embed_dim=48, memory_fuser_embed_dim=48, memory_fuser_intermediate_dim=64,
        memory_encoder_output_channels=16))
    video.save_pretrained(tmp_path / "video")
    _, vmodel = load_hf_image_model(tmp_path / "video")
    exported = model_to_hf(vmodel, config)
    for k, v in video.state_dict().items():
        if k in exported:
            np.testing.assert_array_equal(exported[k], v.numpy(), err_msg=k)

    (tmp_path / "video" / "config.json").write_text('{"model_type": "qwen3_vl"}')
    with pytest.raises(ConfigError, match="not a SAM2 config"):
        load_hf_image_model(tmp_path / "video")


@pytest.mark.parametrize("bad, match", [
    (dict(pixel_values=(1, 3, 32, 32)), "pixel_values has shape"),
    (dict(pixel_values=(1, 3, 64, 64), input_points=(1, 1, 2)), "input_points has shape"),
    (dict(pixel_values=(1, 3, 64, 64), input_points=(1, 1, 2, 2), input_labels=(1, 1, 3)), "input_labels"),
    (dict(pixel_values=(1, 3, 64, 64), input_boxes=(1, 2, 2)), "input_boxes has shape"),
    (dict(pixel_values=(1, 3, 64, 64), input_points=(1, 2, 1, 2), input_boxes=(1, 1, 4)), "prompt sets"),
    (dict(pixel_values=(1, 3, 64, 64), input_masks=(1, 16, 16)), "input_masks has shape"),
    (dict(input_boxes=(1, 1, 4)), "exactly one of"),
])
def test_malformed_inputs_are_one_clear_error(bad, match):
    from stvl_jax.errors import InputError
    from stvl_jax.models.sam2.image_model import abstract_image_model

    model = abstract_image_model(TINY)
    args = {k: jax.ShapeDtypeStruct(v, jnp.int32 if k == "input_labels" else jnp.float32) for k, v in bad.items()}
    with pytest.raises(InputError, match=match):
        nnx.eval_shape(lambda m, a: m(**a), model, args)


@pytest.mark.slow  # an eager init of ~200 parameters: ~26 s on 2 cores
def test_a_model_from_scratch_encodes_prompts_and_the_image_grid_alike():
    """Meta's SAM2 has one Fourier matrix for prompts and image positions: a click at a grid cell's centre is
    encoded as that cell's image positional embedding (transformers' from-scratch init draws two)."""
    from stvl_jax.models.sam2.image_model import Sam2ImageModel

    model = Sam2ImageModel(TINY, rngs=nnx.Rngs(5))
    e, size = TINY.prompt_encoder.embedding_size, TINY.prompt_encoder.image_size
    grid = np.asarray(model.image_positional_embeddings())  # (e, e, D), [y, x]
    i, j = 1, 2
    centre = (np.asarray([j, i], np.float32) + 0.5) * size / e - 0.5  # pixel index (x, y); the encoder adds 0.5
    emb = model.prompt_encoder.embed_points(jnp.asarray(centre)[None, None, None], jnp.zeros((1, 1, 1), jnp.int32),
                                            pad=False)
    label = np.asarray(model.prompt_encoder.point_embed[...])[0]
    np.testing.assert_allclose(np.asarray(emb)[0, 0, 0] - label, grid[i, j], atol=1e-5)
