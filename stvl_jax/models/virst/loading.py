"""Import the backbone-independent parts of an upstream VIRST PyTorch state dict (AIDASLab/VIRST).

Upstream's module tree (model/VIRST.py, model/seg_prompter.py) names, under `model.` (and `base_model.model.`
when saved from the PEFT-wrapped model, as its eval.py loads it from `{"model_state_dict": ...}`):

    seg_prompter.spatial_down.{0,2,4}.{weight,bias}        Conv2d 3x3 s2 (ReLU at 1, 3, 5)
    seg_prompter.memory_norm / seg_proj                    LayerNorm(256) / Linear(D_llm -> 256)
    seg_prompter.decoder.{i}.self_attn.in_proj_{weight,bias}, .out_proj.*      nn.MultiheadAttention
    seg_prompter.decoder.{i}.cross_attn.{q,k,v,o}_proj.*   RotaryMHA
    seg_prompter.decoder.{i}.ff.{0,2}.* ; .norm{1,2,3}.*
    initial_seg_fusion_module.{spatial_down.{0,2,4}, spatial_norm, vision_proj, norm_q, norm_kv,
                               cross_attn.in_proj_*, cross_attn.out_proj.*, gate}
    occ_predictor.*                                        defined upstream, used nowhere: skipped (reported)
    seg_model.*                                            SAM2 in Meta's names (converters.virst_pt maps them)
    everything else                                        the VideoChat-Flash LLM (Qwen2-7B + UMT-L + ToMe)

VIRST's LLM is VideoChat-Flash-Qwen2-7B, which stvl-jax does not build: a state dict holding it is refused
unless the caller asks for the backbone-independent parts only. Tensors whose shape follows the LLM width
(`seg_proj`, the initial fusion's projection, norms and attention) are imported only when the widths agree.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import CheckpointError
from stvl_jax.models.virst.config import VirstConfig

BACKBONE = "VideoChat-Flash-Qwen2-7B (Qwen2-7B LLM, UMT-L vision tower, ToMe projector)"
_PREFIXES = ("base_model.model.", "model.")
PARTS = ("seg_prompter.", "initial_seg_fusion_module.", "seg_model.", "occ_predictor.")


@dataclasses.dataclass
class ImportReport:
    imported: list[str]  # our flat keys that were set
    skipped: dict[str, str]  # upstream key (wrapper prefixes stripped, `strip_prefix`) -> why it was not imported

    def summary(self) -> str:
        return f"imported {len(self.imported)} tensors, skipped {len(self.skipped)}"


def strip_prefix(key: str) -> str:
    """'base_model.model.model.seg_prompter.x' -> 'seg_prompter.x' (PEFT and the causal-LM wrapper removed)."""
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def split_state(state: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                           list[str]]:
    """-> (fusion-module tensors {stripped name: array}, SAM2 tensors in Meta's names, LLM keys)."""
    fusion, sam2, llm = {}, {}, []
    for key, value in state.items():
        name = strip_prefix(key)
        if name.startswith("seg_model."):
            sam2[name[len("seg_model."):]] = value
        elif name.startswith(PARTS):
            fusion[name] = value
        else:
            llm.append(key)
    return fusion, sam2, llm


def refuse_llm(llm_keys: list[str], where: str) -> None:
    if llm_keys:
        raise CheckpointError(
            f"{where} holds {len(llm_keys)} tensors of VIRST's LLM {BACKBONE} (e.g. {llm_keys[0]!r}), which "
            f"stvl-jax does not build (VIRST here runs on Qwen2.5-VL / Qwen3-VL); import only the "
            f"backbone-independent parts (SegPrompter, initial fusion, SAM2) with parts_only=True "
            f"(`--virst-parts-only`)")


def _conv(w: np.ndarray) -> np.ndarray:  # torch (out, in, kh, kw) -> HWIO
    return np.transpose(w, (2, 3, 1, 0))


def _heads_out(w: np.ndarray, b: np.ndarray, heads: int) -> tuple[np.ndarray, np.ndarray]:
    """torch Linear (out=H*hd, in) -> our kernel (in, H, hd), bias (H, hd)."""
    return w.T.reshape(w.shape[1], heads, -1), b.reshape(heads, -1)


def _heads_in(w: np.ndarray, heads: int) -> np.ndarray:
    """torch Linear (out, in=H*hd) -> our kernel (H, hd, out)."""
    return w.T.reshape(heads, -1, w.shape[0])


def _attention(src: dict, prefix: str, dst: str, heads: int, packed: bool) -> dict[str, tuple[str, np.ndarray]]:
    """{our key: (upstream key, array)} of one attention block (packed: nn.MultiheadAttention)."""
    out = {}
    if packed:
        w, b = src[prefix + "in_proj_weight"], src[prefix + "in_proj_bias"]
        for i, name in enumerate("qkv"):
            d = w.shape[1]
            kw, kb = _heads_out(w[i * d:(i + 1) * d], b[i * d:(i + 1) * d], heads)
            out[f"{dst}/{name}_proj/kernel"] = (prefix + "in_proj_weight", kw)
            out[f"{dst}/{name}_proj/bias"] = (prefix + "in_proj_bias", kb)
        o = prefix + "out_proj."
    else:
        for name in "qkv":
            kw, kb = _heads_out(src[f"{prefix}{name}_proj.weight"], src[f"{prefix}{name}_proj.bias"], heads)
            out[f"{dst}/{name}_proj/kernel"] = (f"{prefix}{name}_proj.weight", kw)
            out[f"{dst}/{name}_proj/bias"] = (f"{prefix}{name}_proj.bias", kb)
        o = prefix + "o_proj."
    out[f"{dst}/o_proj/kernel"] = (o + "weight", _heads_in(src[o + "weight"], heads))
    out[f"{dst}/o_proj/bias"] = (o + "bias", src[o + "bias"])
    return out


def _plain(src: dict, pairs: list[tuple[str, str, str]]) -> dict[str, tuple[str, np.ndarray]]:
    """[(upstream module, our module, kind)] kind: 'conv', 'linear', 'norm' -> {our key: (upstream key, array)}."""
    out = {}
    for up, ours, kind in pairs:
        w, b = src[up + ".weight"], src[up + ".bias"]
        kernel = _conv(w) if kind == "conv" else w.T if kind == "linear" else w
        out[f"{ours}/{'weight' if kind == 'norm' else 'kernel'}"] = (up + ".weight", kernel)
        out[f"{ours}/bias"] = (up + ".bias", b)
    return out


def _down(up: str, ours: str, n: int) -> list[tuple[str, str, str]]:
    return [(f"{up}.spatial_down.{2 * i}", f"{ours}/spatial_down/conv{i}", "conv") for i in range(n)]


def fusion_tensors(src: Mapping[str, np.ndarray], cfg: VirstConfig) -> dict[str, tuple[str, np.ndarray]]:
    """{our flat key under VirstModel: (upstream key, array in our layout)} of the SegPrompter (per decoder
    layer: keys `seg_prompter/layers/<i>/...`, stacked by the caller) and, when enabled, the initial fusion."""
    src = dict(src)
    p = cfg.prompter
    try:
        out = _plain(src, [*_down("seg_prompter", "seg_prompter", p.down_layers),
                           ("seg_prompter.memory_norm", "seg_prompter/memory_norm", "norm"),
                           ("seg_prompter.seg_proj", "seg_prompter/seg_proj", "linear")])
        for i in range(p.num_layers):
            up, ours = f"seg_prompter.decoder.{i}.", f"seg_prompter/layers/{i}/"
            out.update(_attention(src, up + "self_attn.", ours + "self_attn", p.num_heads, packed=True))
            out.update(_attention(src, up + "cross_attn.", ours + "cross_attn", p.num_heads, packed=False))
            out.update(_plain(src, [(up + "ff.0", ours + "ff/fc1", "linear"), (up + "ff.2", ours + "ff/fc2", "linear"),
                                    *[(f"{up}norm{j}", f"{ours}norm{j}", "norm") for j in (1, 2, 3)]]))
        if cfg.initial_fusion.enabled:
            up = "initial_seg_fusion_module"
            out.update(_plain(src, [*_down(up, "initial_fusion", p.down_layers),
                                    (up + ".spatial_norm", "initial_fusion/spatial_norm", "norm"),
                                    (up + ".vision_proj", "initial_fusion/vision_proj", "linear"),
                                    (up + ".norm_q", "initial_fusion/norm_q", "norm"),
                                    (up + ".norm_kv", "initial_fusion/norm_kv", "norm")]))
            out.update(_attention(src, up + ".cross_attn.", "initial_fusion", cfg.initial_fusion.num_heads,
                                  packed=True))
            out["initial_fusion/gate"] = (up + ".gate", np.asarray(src[up + ".gate"]).reshape(()))
    except KeyError as e:
        raise CheckpointError(f"VIRST state dict lacks {e.args[0]!r} (a {cfg.prompter.num_layers}-layer "
                              f"SegPrompter with {p.down_layers} down-convs was expected)") from None
    return out


_LAYER = re.compile(r"^seg_prompter/layers/(\d+)/(.*)$")


def stack_layers(tensors: Mapping[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
    """'seg_prompter/layers/<i>/x' entries -> one 'seg_prompter/layers/x' array with a leading layer axis."""
    out, per = {}, {}
    for key, value in tensors.items():
        m = _LAYER.match(key)
        if m:
            per.setdefault(m[2], {})[int(m[1])] = value
        else:
            out[key] = value
    for name, layers in per.items():
        out[f"seg_prompter/layers/{name}"] = np.stack([layers[i] for i in range(num_layers)])
    return out


def _width_dependent(key: str) -> bool:
    """Tensors whose shape follows the LLM width (VIRST's 3584): meaningless under another LLM."""
    return key.startswith("seg_prompter/seg_proj/kernel") or (
        key.startswith("initial_fusion/") and not key.startswith(("initial_fusion/spatial_", "initial_fusion/gate")))


def import_fusion_modules(model, state: Mapping[str, np.ndarray], *, parts_only: bool = False,
                          where: str = "VIRST state dict") -> tuple[ImportReport, dict[str, np.ndarray]]:
    """Set `model.seg_prompter` (and `model.initial_fusion` when enabled) from an upstream VIRST state dict of
    numpy arrays. Returns (report, SAM2 tensors in Meta's names for the SAM2 importer).

    parts_only=False refuses a state dict holding VideoChat-Flash LLM weights (`CheckpointError` naming it);
    True imports the backbone-independent parts and lists the LLM keys as skipped. A tensor whose shape differs
    from ours is an error, except the LLM-width ones (skipped, reported) when the LLM widths differ."""
    from stvl_jax.nn.params import flat_params

    cfg: VirstConfig = model.config
    fusion, sam2, llm = split_state(state)
    if not parts_only:
        refuse_llm(llm, where)
    skipped = {strip_prefix(k): f"LLM ({BACKBONE}) weight" for k in llm}
    for k in fusion:
        if k.startswith("occ_predictor."):
            skipped[k] = "occ_predictor is defined but never used upstream"
        elif k.startswith("initial_seg_fusion_module.") and not cfg.initial_fusion.enabled:
            skipped[k] = "initial fusion is disabled in this model's config (initial_fusion.enabled)"
    tensors = fusion_tensors(fusion, cfg)
    used = {up for up, _ in tensors.values()}
    unknown = sorted(set(fusion) - used - set(skipped))
    if unknown:
        raise CheckpointError(f"{where} has {len(unknown)} fusion tensor(s) the VIRST key map does not know, "
                              f"e.g. {unknown[:3]}")
    source = {k: up for k, (up, _) in tensors.items()}
    arrays = stack_layers({k: np.asarray(a) for k, (_, a) in tensors.items()}, cfg.prompter.num_layers)
    ours = flat_params(model)
    imported = []
    for key, value in arrays.items():
        if key not in ours:
            raise CheckpointError(f"{where}: {key!r} has no parameter in this model")
        want = tuple(ours[key].get_value().shape)
        if tuple(value.shape) != want:
            if _width_dependent(key):
                up = source.get(key, key)
                skipped[up] = (f"its shape {tuple(value.shape)} follows VIRST's LLM width; this model's is "
                               f"{want} (trained afresh)")
                continue
            raise CheckpointError(f"{where}: {key!r} has shape {tuple(value.shape)}, the model expects {want}")
        ours[key].set_value(jnp.asarray(value, dtype=ours[key].get_value().dtype))
        imported.append(key)
    return ImportReport(sorted(imported), skipped), sam2
