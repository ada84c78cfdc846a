"""Upstream VIRST checkpoints -> VirstModel's backbone-independent parts (converters.virst_pt).

The checkpoint is built here as VIRST's eval.py reads it: `{"model_state_dict": ...}` of the PEFT-wrapped
`VirstForCausalLM`, keys `base_model.model.model.<module>...`. Its module tree is hand-built with the attribute
names of upstream's model/seg_prompter.py and model/VIRST.py (Sequential indices, nn.MultiheadAttention's packed
in_proj, RotaryMHA's q/k/v/o_proj), a few LLM-named tensors stand in for VideoChat-Flash, and `seg_model` is
Meta's SAM2.1 Hiera-T built by the `sam2` package (256 px). The SAM2 reference is the existing Meta import
(`read_meta_pt` on the same SAM2 saved alone)."""

from __future__ import annotations

import numpy as np
import pytest

from stvl_jax.errors import CheckpointError

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytestmark = pytest.mark.torch
nn = torch.nn
IMAGE = 256
VIRST_WIDTH = 256  # stands in for VIRST's 3584 (an LLM width other than the tiny model's 128)


class RotaryMHA(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))


class RoPEDecoderLayer(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.cross_attn = RotaryMHA(d)
        self.self_attn = nn.MultiheadAttention(d, heads)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)


def spatial_down(d):
    return nn.Sequential(nn.Conv2d(256, d, 3, 2, 1), nn.ReLU(), nn.Conv2d(d, d, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(d, d, 3, 2, 1), nn.ReLU())


class SegPrompter(nn.Module):
    def __init__(self, in_dim, d=256, heads=8):
        super().__init__()
        self.spatial_down = spatial_down(d)
        self.memory_norm = nn.LayerNorm(d)
        self.seg_proj = nn.Linear(in_dim, d)
        self.decoder = nn.ModuleList([RoPEDecoderLayer(d, heads) for _ in range(2)])


class InitialSegFusion(nn.Module):
    def __init__(self, hidden, d=256):
        super().__init__()
        self.spatial_down = spatial_down(d)
        self.spatial_norm = nn.LayerNorm(d)
        self.vision_proj = nn.Linear(d, hidden)
        self.norm_q, self.norm_kv = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.cross_attn = nn.MultiheadAttention(hidden, 8, batch_first=True)
        self.gate = nn.Parameter(torch.tensor(0.1))


class VirstModelTree(nn.Module):  # VirstModel: the LLM's modules + initialize_module()'s
    def __init__(self, sam2):
        super().__init__()
        self.embed_tokens = nn.Embedding(8, VIRST_WIDTH)
        self.layers = nn.ModuleList([nn.Linear(VIRST_WIDTH, VIRST_WIDTH)])
        self.seg_model = sam2
        self.seg_prompter = SegPrompter(VIRST_WIDTH)
        self.occ_predictor = nn.Linear(256, 1)
        self.initial_seg_fusion_module = InitialSegFusion(VIRST_WIDTH)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from sam2.build_sam import build_sam2
    from sam2_fixtures import redraw

    torch.manual_seed(0)
    sam2 = redraw(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", mode="eval",
                             hydra_overrides_extra=[f"++model.image_size={IMAGE}"]), 0)
    tree = VirstModelTree(sam2)
    with torch.no_grad():
        tree.initial_seg_fusion_module.gate.fill_(0.37)
    state = {f"base_model.model.model.{k}": v for k, v in tree.state_dict().items()}
    state["base_model.model.lm_head.weight"] = torch.zeros(8, VIRST_WIDTH)
    d = tmp_path_factory.mktemp("virst")
    torch.save({"model_state_dict": state}, d / "virst.pt")
    torch.save({"model": sam2.state_dict()}, d / "sam2.pt")
    return d, tree


def abstract_model():
    from converters.sam2_convert import config_from_hf
    from converters.sam2_meta import hf_config, load_meta_state
    from stvl_jax.models.qwen_vl.presets import load_model_config
    from stvl_jax.models.virst.config import VirstConfig
    from stvl_jax.models.virst.model import abstract_virst_model

    return lambda d: abstract_virst_model(VirstConfig(
        llm=load_model_config("qwen3vl_tiny"), seg={"token_id": 7}, initial_fusion={"enabled": True},
        sam2=config_from_hf("sam2_video", hf_config(load_meta_state(d / "sam2.pt"), "tiny", IMAGE))))


def test_refusals(checkpoint):
    from converters.virst_pt import import_virst_pt

    d, _ = checkpoint
    model = abstract_model()(d)
    with pytest.raises(CheckpointError, match="PyTorch pickle.*--allow-pickle"):
        import_virst_pt(model, d / "virst.pt")
    with pytest.raises(CheckpointError, match="VideoChat-Flash-Qwen2-7B.*parts_only=True"):
        import_virst_pt(model, d / "virst.pt", allow_pickle=True)


def test_imports_prompter_fusion_and_sam2(checkpoint):
    from converters.sam2_meta import read_meta_pt
    from converters.virst_pt import import_virst_pt
    from stvl_jax.nn.params import flat_params

    d, tree = checkpoint
    model = abstract_model()(d)
    report = import_virst_pt(model, d / "virst.pt", allow_pickle=True, parts_only=True)
    # skipped (keys without the PEFT / causal-LM prefixes), each with its reason: the LLM, the unused
    # occ_predictor, the LLM-width tensors
    assert report.skipped["lm_head.weight"].startswith("LLM (VideoChat-Flash")
    assert report.skipped["layers.0.weight"].startswith("LLM")
    assert "never used" in report.skipped["occ_predictor.weight"]
    width = {k for k, why in report.skipped.items() if "LLM width" in why}
    fusion = "initial_seg_fusion_module."
    assert width == {"seg_prompter.seg_proj.weight", *(fusion + m + s for m in ("vision_proj", "norm_q", "norm_kv",
                                                                              "cross_attn.out_proj")
                                                       for s in (".weight", ".bias")),
                     fusion + "cross_attn.in_proj_weight", fusion + "cross_attn.in_proj_bias"}
    ours = flat_params(model)

    def val(key):
        return np.asarray(ours[key].get_value())

    # SAM2: every tensor, equal to the Meta import of the same SAM2
    ref = read_meta_pt(d / "sam2.pt", image_size=IMAGE).params
    assert sorted(k for k in report.imported if k.startswith("sam2/")) == sorted(f"sam2/{k}" for k in ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(val(f"sam2/{k}"), v)
    # fusion modules: layouts by hand from the torch tensors
    sp = tree.seg_prompter
    t = lambda x: x.detach().numpy()  # noqa: E731
    np.testing.assert_array_equal(val("seg_prompter/spatial_down/conv2/kernel"),
                                  t(sp.spatial_down[4].weight).transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(val("seg_prompter/layers/cross_attn/k_proj/kernel")[1],
                                  t(sp.decoder[1].cross_attn.k_proj.weight).T.reshape(256, 8, 32))
    v_in = t(sp.decoder[0].self_attn.in_proj_weight)[512:]
    np.testing.assert_array_equal(val("seg_prompter/layers/self_attn/v_proj/kernel")[0], v_in.T.reshape(256, 8, 32))
    np.testing.assert_array_equal(val("seg_prompter/layers/self_attn/o_proj/kernel")[0],
                                  t(sp.decoder[0].self_attn.out_proj.weight).T.reshape(8, 32, 256))
    np.testing.assert_array_equal(val("seg_prompter/layers/ff/fc1/kernel")[1], t(sp.decoder[1].ff[0].weight).T)
    np.testing.assert_array_equal(val("seg_prompter/layers/norm3/bias")[0], t(sp.decoder[0].norm3.bias))
    np.testing.assert_allclose(val("initial_fusion/gate"), 0.37, rtol=1e-6)
    assert "seg_prompter/seg_proj/kernel" not in report.imported and "seg_prompter/seg_proj/bias" in report.imported
