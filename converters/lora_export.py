"""LoRA adapters on export (`stvl convert export`): merged into the base weights, or written as a PEFT adapter.

A checkpoint trained with `lora:` holds `.../<linear>/lora/a` (*lead, *in, r) and `.../lora/b` (*lead, r, *out)
beside the base kernels, and a "lora" section in stvl_config.json (rank, alpha, dropout, targets, modules).

    merged (default)        W' = W + (alpha / r) * A B     in our layout, then the usual HF export
    --lora-adapter-dir D    the base weights unmerged to --out, and D/adapter_config.json +
                            D/adapter_model.safetensors that `peft.PeftModel.from_pretrained(base, D)` loads:
                            base_model.model.<module>.lora_A.weight (r, in) = A^T, .lora_B.weight (out, r) = B^T

Module names are transformers' module tree (the names `key_map` uses), which is what PEFT matches against.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from converters.qwen_vl_keys import LINEAR, key_map
from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.nn.lora import LoRASpec, adapter_kernels, is_adapter, lora_delta

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_spec(info: Mapping, stored: Mapping[str, tuple], where: str) -> LoRASpec | None:
    """The checkpoint's LoRA spec (None without adapters); adapters without a "lora" section, or an adapter
    without its kernel or partner, are one CheckpointError line."""
    has = [k for k in stored if is_adapter(k)]
    section = info.get("lora")
    if not has and section is None:
        return None
    if section is None:
        raise CheckpointError(f"{where} holds {len(has)} LoRA adapter arrays but no \"lora\" section in its "
                              f"stvl_config.json (rank/alpha unknown), e.g. {has[0]!r}")
    pairs = adapter_kernels(has)
    broken = [k for k, (a, b) in pairs.items() if k not in stored or b not in stored] + \
        [k for k in has if k.endswith("/lora/b") and k[:-1] + "a" not in stored]
    if broken or not pairs:
        raise CheckpointError(f"{where}: LoRA adapters without their base kernel or partner, e.g. "
                              f"{(broken or has or ['(none)'])[0]!r}")
    try:
        return LoRASpec.from_dict(section)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: unreadable \"lora\" section {section!r} ({e})") from None


def merging_getter(get: Callable[[str], np.ndarray], stored: Mapping[str, tuple], scale: float
                   ) -> Callable[[str], np.ndarray]:
    """get(path) with W + scale * A B for every adapted kernel (in the kernel's dtype, summed in float32)."""
    pairs = adapter_kernels(stored)

    def merged(path: str) -> np.ndarray:
        w = np.asarray(get(path))
        if path not in pairs:
            return w
        a, b = (np.asarray(get(p)) for p in pairs[path])
        return (w.astype(np.float32) + lora_delta(a, b, w.ndim, scale)).astype(w.dtype)

    return merged


def _hf_modules(config: QwenVLConfig) -> dict[str, list[str]]:
    """{our kernel path: [HF module name per layer]} of the plain linear layers (not fused qkv)."""
    out = {}
    for entry in key_map(config):
        if entry.hook == LINEAR and len(entry.ours) == 1 and entry.ours[0].endswith("/kernel"):
            out[entry.ours[0]] = [n[: -len(".weight")] for n in entry.hf_names()]
    return out


def _target_regex(modules: list[str]) -> str:
    """One regex that PEFT full-matches against module names: exactly these modules (layer index as \\d+)."""
    patterns = sorted({re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(m)) for m in modules})
    return "^(" + "|".join(patterns) + ")$"


def write_peft_adapter(out_dir: str | Path, config: QwenVLConfig, spec: LoRASpec, stored: Mapping[str, tuple],
                       get: Callable[[str], np.ndarray], *, base_model: str | None, dtype=None,
                       overwrite: bool = False) -> list[str]:
    """Write the PEFT adapter directory; returns its tensor names."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"adapter directory {str(out)!r} already exists (pass --overwrite)")
    names = _hf_modules(config)
    pairs = adapter_kernels(stored)
    fused = sorted(k for k in pairs if k not in names)
    if fused:
        raise CheckpointError(f"--lora-adapter-dir: {fused[0]!r} is part of a fused layer in transformers (the "
                              f"vision tower's qkv), which a PEFT adapter cannot express per projection; export "
                              f"the merged model instead (without --lora-adapter-dir)")
    tensors, modules = {}, []
    for kernel, (a_path, b_path) in sorted(pairs.items()):
        a, b = np.asarray(get(a_path)), np.asarray(get(b_path))
        layers = names[kernel]
        lead = a.ndim + b.ndim - len(stored[kernel][0]) - 2
        a = a.reshape(len(layers) if lead else 1, -1, spec.rank)
        b = b.reshape(len(layers) if lead else 1, spec.rank, -1)
        for i, module in enumerate(layers):
            prefix = f"base_model.model.{module}"
            tensors[prefix + ".lora_A.weight"] = np.ascontiguousarray(a[i].T.astype(dtype or a.dtype))
            tensors[prefix + ".lora_B.weight"] = np.ascontiguousarray(b[i].T.astype(dtype or b.dtype))
            modules.append(module)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    adapter_config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model, "r": spec.rank,
        "lora_alpha": spec.alpha, "lora_dropout": spec.dropout, "target_modules": _target_regex(modules),
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "modules_to_save": None,
        "init_lora_weights": True, "inference_mode": True,
    }
    (out / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
    return sorted(tensors)
