"""SegPrompter and initial fusion: fp32 parity with upstream VIRST's PyTorch modules (model/seg_prompter.py of
AIDASLab/VIRST, read from a local checkout: $VIRST_REPO or the mirror; skipped, with the reason, without one),
weights moved by `loading.import_fusion_modules` from the upstream module tree's own state dict; plus
torch-free properties."""

import importlib.util
import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.models.virst.config import VirstConfig
from stvl_jax.models.virst.initial_fusion import InitialFusion
from stvl_jax.models.virst.loading import import_fusion_modules
from stvl_jax.models.virst.seg_prompter import SegPrompter

MIRROR = Path("/work/.mirror/AIDASLab+VIRST/repo")


def upstream_module(tmp_path_factory):
    """model/seg_prompter.py of upstream VIRST as an importable module, or skip."""
    root = Path(os.environ.get("VIRST_REPO", MIRROR))
    src = root / "model" / "seg_prompter.py"
    text = None
    if src.is_file():
        text = src.read_text()
    elif (root / "HEAD").is_file() or (root / ".git").exists():  # a bare mirror: read the file from git
        out = subprocess.run(["git", "--git-dir", str(root if (root / "HEAD").is_file() else root / ".git"),
                              "show", "HEAD:model/seg_prompter.py"], capture_output=True, text=True)
        text = out.stdout if out.returncode == 0 else None
    if not text:
        pytest.skip(f"upstream VIRST checkout not found at {root} (set VIRST_REPO)")
    path = tmp_path_factory.mktemp("virst") / "virst_seg_prompter.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("virst_seg_prompter", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def full_size_config(**fusion) -> VirstConfig:
    """VIRST's SegPrompter sizes (SAM2 at 1024 px: 64x64x256 features -> 8x8 grid) on a 128-wide tiny LLM."""
    return VirstConfig(llm=load_model_config("qwen3vl_tiny"), seg={"token_id": 7},
                       initial_fusion={"enabled": True, **fusion})


class Holder(nnx.Module):
    def __init__(self, cfg, rngs):
        self.config = cfg
        self.seg_prompter = SegPrompter(cfg, rngs=rngs)
        self.initial_fusion = InitialFusion(cfg, rngs=rngs)


@pytest.mark.torch
@pytest.mark.slow  # ~30 s on 2 shared cores (full-size 64x64x256 features)
def test_parity_with_upstream(tmp_path_factory):
    import torch

    up = upstream_module(tmp_path_factory)
    cfg = full_size_config()
    d_llm, T, Q = cfg.llm.text.hidden_size, 3, 10
    torch.manual_seed(0)
    prompter = up.SegPrompter(in_dim=d_llm, token_dim=256).eval()
    fusion = up.InitialSegFusion(hidden_dim=d_llm, vision_dim=256, token_dim=256, grid_hw=8, num_heads=8).eval()
    with torch.no_grad():  # non-trivial norms / gate so that a swapped weight or bias would show
        for mod in (prompter, fusion):
            for name, p in mod.named_parameters():
                if "norm" in name or name == "gate":
                    p.add_(0.3 * torch.randn_like(p))
    state = {f"model.seg_prompter.{k}": v.numpy() for k, v in prompter.state_dict().items()}
    state |= {f"model.initial_seg_fusion_module.{k}": v.numpy() for k, v in fusion.state_dict().items()}
    ours = Holder(cfg, nnx.Rngs(1))
    report, sam2 = import_fusion_modules(ours, state, parts_only=True)
    assert not report.skipped and not sam2
    assert len(report.imported) == len(jax.tree.leaves(nnx.state(ours, nnx.Param)))

    rng = np.random.default_rng(0)
    seg = rng.normal(size=(1, Q, d_llm)).astype(np.float32)
    feats = rng.normal(size=(1, T, 256, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want, want_scores = prompter(torch.from_numpy(seg), torch.from_numpy(feats), return_attn=True)
        want_fused = fusion(torch.from_numpy(seg), torch.from_numpy(feats))
    feats_nhwc = jnp.asarray(np.transpose(feats[0], (0, 2, 3, 1)))
    got, got_scores = ours.seg_prompter(jnp.asarray(seg), feats_nhwc)
    # upstream (1, Q, T, C); ours (B, T, Q, C)
    np.testing.assert_allclose(np.asarray(got), np.transpose(want.numpy(), (0, 2, 1, 3)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got_scores), want_scores.numpy(), rtol=1e-4, atol=1e-7)
    got_fused = ours.initial_fusion(jnp.asarray(seg), feats_nhwc)
    np.testing.assert_allclose(np.asarray(got_fused), want_fused.numpy(), rtol=1e-4, atol=1e-4)


def test_shapes_scores_mask_and_dropout():
    cfg = full_size_config()
    p = SegPrompter(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    seg = jnp.asarray(rng.normal(size=(2, 4, 128)), jnp.float32)
    feats = jnp.asarray(rng.normal(size=(3, 64, 64, 256)), jnp.float32)
    prompts, scores = p(seg, feats)
    assert prompts.shape == (2, 3, 4, 256) and scores.shape == (2, 3)
    # each query's weights sum to 1 over the T*64 keys, so the per-frame means (over 64 cells) sum to 1/64
    np.testing.assert_allclose(np.asarray(scores).sum(-1), 1 / 64, rtol=1e-5)
    # the objects are independent: object 1 alone gives the same result
    alone, _ = p(seg[1:], feats)
    np.testing.assert_allclose(np.asarray(alone[0]), np.asarray(prompts[1]), rtol=1e-5, atol=1e-5)
    # a padded [SEG] (mask False) does not change the real queries' outputs, whatever its value
    mask = jnp.asarray([[True, True, True, False]] * 2)
    a, _ = p(seg, feats, mask)
    b, _ = p(seg.at[:, 3].set(100.0), feats, mask)
    np.testing.assert_allclose(np.asarray(a[:, :, :3]), np.asarray(b[:, :, :3]), rtol=1e-5, atol=1e-5)
    # dropout only with a key
    c, _ = p(seg, feats, dropout_rng=jax.random.key(0))
    assert not np.allclose(np.asarray(c), np.asarray(prompts))
