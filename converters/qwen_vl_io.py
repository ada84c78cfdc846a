"""Checkpoint-level conversion: an HF Qwen-VL directory <-> an stvl-jax checkpoint (`stvl_jax.checkpoint_io`).

Import streams: one HF tensor is read at a time (headers first, so key and shape errors come before any data)
and written into the preallocated stacked arrays, which Orbax then writes without another copy — peak RAM is
about the model once. Export restores one stacked parameter at a time and streams its HF tensors into the
planned safetensors shards — peak RAM is about the largest parameter.
The HF config.json the weights came from is kept in the checkpoint (`source.hf_config`) and written back on
export when it still describes the model, so export reproduces the original config, not just an equivalent.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from converters.hf_checkpoint import HFCheckpoint
from converters.lora_export import adapter_spec, merging_getter, write_peft_adapter
from converters.qwen_vl_config import from_hf_dict, to_hf_dict
from converters.qwen_vl_convert import num_hf_tensors, params_from_hf, params_to_hf
from converters.qwen_vl_keys import key_map, legacy_hf_key
from converters.qwen_vl_preprocess import (
    PREPROCESSOR_FILE, VIDEO_PREPROCESSOR_FILE, hf_dir_preprocessing, processor_files_for_export,
)
from converters.safetensors_io import parse_size, plan_shards, write_shards
from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.nn.lora import is_adapter

# names `save_pretrained` of transformers 5.23 writes: Qwen2.5-VL keeps the hub's `visual.*` / `model.layers.*`
# (its weight-conversion mapping is reversed on save); Qwen3-VL writes its module names.
DEFAULT_NAMES = {"qwen2_5_vl": "legacy", "qwen3_vl": "module"}
NAME_STYLES = ("auto", "module", "legacy")
DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float32": "float32", "fp32": "float32",
               "float16": "float16", "fp16": "float16"}


def parse_dtype(name: str | None) -> np.dtype | None:
    """'bf16' / 'bfloat16' / 'float32' / ... -> numpy dtype; None or 'keep' -> None (keep as stored)."""
    if name is None or name == "keep":
        return None
    if name not in DTYPE_NAMES:
        raise CheckpointError(f"dtype {name!r} is not one of {sorted(DTYPE_NAMES)} or 'keep'")
    return np.dtype(DTYPE_NAMES[name])  # 'bfloat16' is known to numpy once ml_dtypes is imported (safetensors_io)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", file=sys.stderr, dynamic_ncols=True, disable=not enabled)


def _say(msg: str, enabled: bool) -> None:
    if enabled:
        print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ import
def import_hf(hf_path: str | Path, out: str | Path, *, dtype: str | None = None, allow_pickle: bool = False,
              overwrite: bool = False, progress: bool = True) -> Path:
    """HF directory (or one .safetensors file next to a config.json) -> stvl-jax checkpoint at `out`."""
    from stvl_jax.models.qwen_vl.loading import save_model

    np_dtype = parse_dtype(dtype)
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"output {str(out)!r} already exists (pass --overwrite)")
    with HFCheckpoint(hf_path, allow_pickle=allow_pickle) as ck:
        hf_config = ck.config()
        config = from_hf_dict(hf_config)
        with _progress(num_hf_tensors(config), "import", progress) as bar:
            flat = params_from_hf(config, ck.names, ck.get, dtype=np_dtype, progress=bar.update,
                                  get_shape=lambda n: ck.spec(n)[0])
        source = ck.source_info()
        preprocessing, provenance = hf_dir_preprocessing(ck.path if ck.path.is_dir() else ck.path.parent, config)
        source.update(provenance)
    _say(f"writing Orbax checkpoint {str(out)!r}", progress)
    return save_model(flat, config, out, source=source, overwrite=overwrite, preprocessing=preprocessing)


# ------------------------------------------------------------------------------------------ export
def hf_config_for_export(config: QwenVLConfig, source: dict[str, Any], torch_dtype: str) -> dict[str, Any]:
    """The config.json to write: the imported one when it still describes `config`, else a fresh one."""
    stored = source.get("hf_config") if isinstance(source, dict) else None
    out = None
    if isinstance(stored, dict):
        try:
            if from_hf_dict(stored) == config:
                out = copy.deepcopy(stored)
        except CheckpointError:
            pass
    if out is None:
        out = to_hf_dict(config)
    out.pop("torch_dtype", None)  # transformers 5 writes `dtype`
    out["dtype"] = torch_dtype
    return out


def hf_name_fn(config: QwenVLConfig, names: str) -> Callable[[str], str]:
    if names not in NAME_STYLES:
        raise CheckpointError(f"--names {names!r} is not one of {NAME_STYLES}")
    style = DEFAULT_NAMES[config.family] if names == "auto" else names
    if style == "legacy":
        if config.family != "qwen2_5_vl":
            raise CheckpointError(f"legacy names exist only for Qwen2.5-VL; this checkpoint is {config.family}")
        return legacy_hf_key
    return lambda n: n


def export_hf(ckpt: str | Path, out: str | Path, *, dtype: str | None = None, max_shard_size: str | int = "5GB",
              names: str = "auto", overwrite: bool = False, progress: bool = True, verify: bool = True,
              allow_non_finite: bool = False, lora_adapter_dir: str | Path | None = None) -> dict[str, str]:
    """stvl-jax checkpoint -> HF directory (safetensors shards [+ index], config.json, generation_config.json,
    preprocessor_config.json, video_preprocessor_config.json) that `from_pretrained` loads. Returns the weight
    map {HF name: file}.

    verify: check every array against the checkpoint's checksums. A tensor holding NaN/inf is refused unless
    allow_non_finite. A failed export removes what it wrote, so that rerunning it is not blocked.
    LoRA adapters (`converters.lora_export`) are merged into their kernels, or, with `lora_adapter_dir`, the
    base weights are written unmerged and the adapters as a PEFT adapter directory there."""
    from stvl_jax import checkpoint_io
    from stvl_jax.models.qwen_vl.loading import check_params, read_config

    np_dtype = parse_dtype(dtype)
    max_bytes = parse_size(max_shard_size)
    checkpoint_io.read_info(ckpt)  # stvl-jax checkpoints only: an HF directory needs no export
    config, info = read_config(ckpt)
    rename = hf_name_fn(config, names)
    stored = checkpoint_io.param_metadata(ckpt)
    lora = adapter_spec(info, stored, f"checkpoint {str(ckpt)!r}")
    if lora_adapter_dir is not None and lora is None:
        raise CheckpointError(f"--lora-adapter-dir: checkpoint {str(ckpt)!r} has no LoRA adapters")
    check_params(config, {k: v for k, v in stored.items() if not is_adapter(k)}, f"checkpoint {str(ckpt)!r}")
    out = Path(out)
    for stale in out.glob("*.tmp") if out.is_dir() else ():
        stale.unlink()  # a temporary of an interrupted export: never a result
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"output {str(out)!r} already exists (pass --overwrite)")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    try:
        return _export_into(ckpt, out, config, info, stored, rename, np_dtype, max_bytes, progress, verify,
                            allow_non_finite, lora, lora_adapter_dir, overwrite)
    except BaseException:
        # this export's files, and every shard (with --overwrite the old ones are already gone): no partial
        # export is left to be mistaken for a model, and the rerun is not blocked
        written = set(out.iterdir()) - before
        for path in (*written, *out.glob("*.safetensors"), out / "model.safetensors.index.json"):
            path.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise


def _export_into(ckpt, out, config, info, stored, rename, np_dtype, max_bytes, progress, verify, allow_non_finite,
                 lora=None, lora_adapter_dir=None, overwrite=False):
    from stvl_jax import checkpoint_integrity, checkpoint_io
    from stvl_jax.models.qwen_vl.loading import read_preprocessing

    for old in (*out.glob("*.safetensors"), out / "model.safetensors.index.json"):
        old.unlink(missing_ok=True)  # --overwrite: no stale shard may survive next to the new index

    specs = [(rename(name), entry.hf_shape, np_dtype or stored[entry.ours[0]][1])
             for entry in key_map(config) for name in entry.hf_names()]
    shards = plan_shards(specs, max_bytes)
    # one parameter restored at a time (params_to_hf drops an entry's arrays before the next): host memory
    # holds the largest stacked parameter, not the model
    def get(p):
        return checkpoint_io.restore_params(ckpt, {p: None}, verify=verify)[p]

    if lora is not None and lora_adapter_dir is not None:
        write_peft_adapter(lora_adapter_dir, config, lora, stored, get, base_model=str(out), dtype=np_dtype,
                           overwrite=overwrite)
    base = merging_getter(get, stored, lora.scale) if lora is not None and lora_adapter_dir is None else get
    tensors = ((rename(n), t if np_dtype is None else t.astype(np_dtype)) for n, t in params_to_hf(config, base))
    if not allow_non_finite:
        tensors = checkpoint_integrity.require_finite(tensors, f"checkpoint {str(ckpt)!r}")
    with _progress(len(specs), "export", progress) as bar:
        weight_map = write_shards(out, shards, tensors, progress=bar.update)
    nominal = checkpoint_io.dominant_dtype((s, d) for _, s, d in specs)
    source = info.get("source") or {}
    (out / "config.json").write_text(json.dumps(hf_config_for_export(config, source, str(nominal)), indent=2,
                                                sort_keys=True) + "\n")
    if isinstance(source, dict) and source.get("generation_config"):
        (out / "generation_config.json").write_text(json.dumps(source["generation_config"], indent=2) + "\n")
    files = processor_files_for_export(read_preprocessing(ckpt, config, info), source if isinstance(source, dict)
                                       else {}, config.default_preprocessing(), architecture=config.architecture)
    for name, data in zip((PREPROCESSOR_FILE, VIDEO_PREPROCESSOR_FILE), files):
        (out / name).write_text(json.dumps(data, indent=2) + "\n")
    return weight_map
