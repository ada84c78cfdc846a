"""Meta's original SAM2.1 checkpoints (`{"model": state_dict}` of the `sam2` package's `SAM2Base`): built here
with `sam2.build_sam.build_sam2` from Meta's own yaml (random weights, every tensor redrawn), saved with
torch.save, imported through `converters.sam2_meta` (key map from the module tree, Hiera size from the shapes).

The references are Meta's modules themselves: the image path (Meta's `forward_image`, its backbone-feature
preparation, `sam_prompt_encoder`, `sam_mask_decoder`) against our Flax model on the same image and prompts;
and transformers' `Sam2Model`, strictly loaded with the HF state dict our import exports, on the same inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stvl_jax.cli import main
from stvl_jax.errors import CheckpointError

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytestmark = pytest.mark.torch

IMAGE = 256  # Meta's yaml at a quarter of its 1024 px (hydra override): the same modules, 16x less work
TOL = 1e-4


def build_meta(yaml: str = "configs/sam2.1/sam2.1_hiera_t.yaml", image_size: int = IMAGE, seed: int = 0):
    from sam2.build_sam import build_sam2
    from sam2_fixtures import redraw

    torch.manual_seed(seed)
    model = build_sam2(yaml, ckpt_path=None, device="cpu", mode="eval",
                       hydra_overrides_extra=[f"++model.image_size={image_size}"])
    return redraw(model, seed)


@pytest.fixture(scope="module")
def meta(tmp_path_factory):
    model = build_meta()
    path = tmp_path_factory.mktemp("meta") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return model, path


def meta_image_path(model, pixels, coords, labels):
    """Meta's SAM2 image path on (1, 3, S, S) pixels and (1, N, 2) pixel coords / (1, N) labels: what
    `SAM2Base._forward_sam_heads` runs before it masks out frames without an object (the raw decoder outputs)."""
    with torch.no_grad():
        backbone_out = model.forward_image(pixels)
        _, feats, _, sizes = model._prepare_backbone_features(backbone_out)
        feats[-1] = feats[-1] + model.no_mem_embed
        maps = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(feats[::-1], sizes[::-1])][::-1]
        sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        masks, iou, _, obj = model.sam_mask_decoder(
            image_embeddings=maps[-1], image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
            repeat_image=False, high_res_features=maps[:-1])
    return masks.numpy(), iou.numpy(), obj.numpy()


def test_infers_the_hiera_size_and_refuses_a_wrong_flag(meta):
    from converters.sam2_meta import infer_hiera_size, load_meta_state

    _, path = meta
    state = load_meta_state(path)
    assert infer_hiera_size(state, "x") == "tiny"
    from converters.sam2_meta import read_meta_pt

    with pytest.raises(CheckpointError, match="Hiera-tiny by its tensor shapes, not 'large'"):
        read_meta_pt(path, hiera_size="large", family="sam2", image_size=IMAGE)


@pytest.mark.slow  # Hiera-T compiled on XLA:CPU (~30-60 s on a loaded 2-core machine)
def test_image_path_matches_meta_and_transformers(meta, tmp_path):
    import jax.numpy as jnp
    from flax import nnx
    from transformers import Sam2Config, Sam2Model

    from converters.sam2_convert import flat_to_hf
    from converters.sam2_meta import read_meta_pt
    from stvl_jax.models.sam2.loading import load_model, save_model

    model, path = meta
    read = read_meta_pt(path, family="sam2", image_size=IMAGE)
    assert read.family == "sam2" and read.config.vision.backbone.blocks_per_stage == (1, 2, 7, 2)
    ckpt = save_model(read.params, read.config, tmp_path / "ckpt", source=read.source,
                      preprocessing=read.preprocessing)
    ours = load_model(ckpt, dtype=jnp.float32)

    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((1, 3, IMAGE, IMAGE)).astype(np.float32)
    # a box as Meta's predictor gives it (corner points, labels 2 and 3), a positive and a negative click
    coords = np.array([[[40.0, 60.0], [200.0, 180.0], [120.0, 100.0], [30.0, 220.0]]], np.float32)
    labels = np.array([[2, 3, 1, 0]], np.int64)
    want = meta_image_path(model, torch.from_numpy(pixels), torch.from_numpy(coords), torch.from_numpy(labels))

    got = nnx.jit(lambda m, x, p, lab: m(pixel_values=x, input_points=p, input_labels=lab, multimask_output=True))(
        ours, jnp.asarray(pixels), jnp.asarray(coords[:, None]), jnp.asarray(labels[:, None]))
    for name, w, g in zip(("masks", "iou", "object score"), want,
                          (got.pred_masks[:, 0], got.iou_scores[:, 0], got.object_score_logits[:, 0])):
        err = float(np.abs(np.asarray(g) - w).max())
        print(f"ours vs Meta, {name}: max |Δ| {err:.2e}")
        assert err <= TOL, f"{name}: max |Δ| {err:.2e} vs Meta"

    # transformers loads exactly the tensors our import exports (strict), and agrees with Meta too
    hf = Sam2Model(Sam2Config(**read.source["hf_config"])).eval()
    hf.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
                        flat_to_hf("sam2", read.config, read.params).items()}, strict=True)
    with torch.no_grad():
        out = hf(pixel_values=torch.from_numpy(pixels), input_points=torch.from_numpy(coords[:, None]),
                 input_labels=torch.from_numpy(labels[:, None]), multimask_output=True)
    err = float(np.abs(out.pred_masks[:, 0].numpy() - want[0]).max())
    print(f"transformers vs Meta, masks: max |Δ| {err:.2e}")
    assert err <= TOL, f"transformers vs Meta: max |Δ mask logit| {err:.2e}"


def test_cli_refuses_a_pt_without_the_flag_and_a_non_sam2_pt(meta, tmp_path, capsys):
    _, path = meta
    assert main(["convert", "import", "--hf", str(path), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--meta-pt" in err[0] and str(path) in err[0]
    other = tmp_path / "other.pt"
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, other)
    assert main(["convert", "import", "--hf", str(other), "--meta-pt", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a Meta SAM2 checkpoint" in err[0]
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(2)}, plain)
    assert main(["convert", "import", "--hf", str(plain), "--meta-pt", "--out", str(tmp_path / "c")]) == 2
    assert "not a Meta SAM2 checkpoint" in capsys.readouterr().err


@pytest.mark.slow  # a full-size Hiera-T (39M parameters) through Orbax and transformers: ~40 s on 2 loaded cores
def test_cli_imports_the_whole_video_model(meta, tmp_path):
    """`--meta-pt` imports every tensor (image path + memory) as a `sam2_video` checkpoint; its export is a
    directory transformers' `Sam2VideoModel` loads with every key matched, and `load_model` gives our video model."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    import stvl_jax
    from stvl_jax.models.sam2.video_model import Sam2VideoModel as OurVideoModel

    _, path = meta
    ckpt, out = tmp_path / "ckpt", tmp_path / "hf"
    assert main(["convert", "import", "--hf", str(path), "--meta-pt", "--hiera-size", "tiny", "--out", str(ckpt),
                 "--quiet"]) == 0
    info = json.loads((ckpt / "stvl_config.json").read_text())
    assert info["family"] == "sam2_video" and info["source"]["hiera_size"] == "tiny"
    assert main(["convert", "export", "--ckpt", str(ckpt), "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    hf = Sam2VideoModel(Sam2VideoConfig(**{k: v for k, v in config.items() if k != "dtype"}))
    from safetensors.torch import load_file

    result = hf.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    state = torch.load(path, weights_only=True)["model"]
    exported = load_file(str(out / "model.safetensors"))
    # spot checks against Meta's own tensors, by the names the sam2 package gives them
    for meta, hf_name in (("memory_encoder.fuser.layers.1.gamma", "memory_encoder.memory_fuser.layers.1.scale"),
                          ("obj_ptr_proj.layers.2.weight", "object_pointer_proj.proj_out.weight"),
                          ("sam_mask_decoder.iou_prediction_head.layers.2.weight",
                           "mask_decoder.iou_prediction_head.proj_out.weight"),
                          ("image_encoder.neck.convs.3.conv.weight", "vision_encoder.neck.convs.3.weight")):
        assert torch.equal(state[meta], exported[hf_name]), (meta, hf_name)
    assert isinstance(stvl_jax.load_model(ckpt), OurVideoModel)


def test_preprocessing_is_sams_default(meta, tmp_path):
    from converters.sam2_meta import read_meta_pt

    read = read_meta_pt(meta[1], family="sam2", image_size=IMAGE)
    assert read.preprocessing.image_size == IMAGE and read.source["kind"] == "meta-sam2"
    assert json.loads(json.dumps(read.source))["hiera_size"] == "tiny"


@pytest.mark.parametrize("yaml,size", [("s", "small"), ("b+", "base_plus"), ("l", "large")])
def test_every_released_size_maps_with_meta_shapes(yaml, size):
    """Meta's own yaml builds the model (random init, 2-5 s each); the Hiera size is inferred from its tensors
    and every HF tensor of our sam2_video key map (for the config built for that size) finds its Meta tensor with
    the HF shape."""
    from sam2.build_sam import build_sam2

    from converters.sam2_convert import config_from_hf, hf_names
    from converters.sam2_meta import hf_config, infer_hiera_size, meta_name_of, trunk_names

    model = build_sam2(f"configs/sam2.1/sam2.1_hiera_{yaml}.yaml", ckpt_path=None, device="cpu", mode="eval")
    state = model.state_dict()
    assert infer_hiera_size(state, "x") == size
    config = config_from_hf("sam2_video", hf_config(state, size))
    keys, trunk, used = set(state), trunk_names(set(state)), set()
    for name, shape in hf_names("sam2_video", config):
        if name == "prompt_encoder.point_embed.weight":
            continue
        meta = meta_name_of(name, keys, trunk)
        assert tuple(state[meta].shape) == shape, (name, meta)
        used.add(meta)
    assert sorted(k for k in keys - used if not k.startswith("sam_prompt_encoder.point_embeddings.")) == []
