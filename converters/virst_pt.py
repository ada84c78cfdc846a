"""Upstream VIRST checkpoints (AIDASLab/VIRST: `torch.save({"model_state_dict": ...})` of the PEFT-wrapped
`VirstForCausalLM`) -> the backbone-independent parts of a `VirstModel`: SegPrompter, initial fusion, SAM2.

A pickle: read only with `allow_pickle=True` (`--allow-pickle`), and then with `torch.load(weights_only=True)`.
The fusion modules' key map is `stvl_jax.models.virst.loading`; SAM2 (`seg_model.*`, Meta's names) goes through
the Meta SAM2.1 key map (`converters.sam2_meta`) into the model's `sam2` config, which must match the
checkpoint's SAM2 (VIRST: SAM2.1 Hiera-L at 1024 px). VIRST's LLM (VideoChat-Flash-Qwen2-7B) is refused unless
`parts_only=True`, which imports the rest and reports the LLM tensors as skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import CheckpointError


def load_virst_state(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """{name: torch.Tensor} of a VIRST .pt/.bin (or one `CheckpointError` line)."""
    from converters.hf_checkpoint import PickleRefused, _torch_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"VIRST checkpoint {str(path)!r} does not exist or is not a file")
    if not allow_pickle:
        raise PickleRefused(f"{str(path)!r} is a PyTorch pickle; unpickling can run arbitrary code, so it is "
                            f"refused. Pass --allow-pickle (allow_pickle=True) to load it with "
                            f"torch.load(weights_only=True)", path)
    return _torch_load(path)


def sam2_params(meta_state: dict[str, Any], config, where: str) -> dict[str, np.ndarray]:
    """SAM2 tensors in Meta's names (VIRST's `seg_model.*`, prefix removed) -> our flat SAM2 video params."""
    from converters.sam2_convert import hf_names, hf_to_flat
    from converters.sam2_meta import meta_to_hf_state

    names = [n for n, _ in hf_names("sam2_video", config)]
    hf = meta_to_hf_state(meta_state, names, where=f"{where} (seg_model)", family="sam2_video")
    try:
        return hf_to_flat("sam2_video", config, hf)
    except CheckpointError as e:
        raise CheckpointError(f"{where} (seg_model): {e}") from None


def import_virst_pt(model, path: str | Path, *, allow_pickle: bool = False, parts_only: bool = False):
    """Set `model`'s SegPrompter, initial fusion (when enabled) and SAM2 from a VIRST checkpoint.
    -> `ImportReport` (imported flat keys, skipped upstream keys with the reason)."""
    from converters.hf_checkpoint import _to_numpy
    from stvl_jax.models.virst.loading import import_fusion_modules, split_state
    from stvl_jax.nn.params import flat_params

    where = f"VIRST checkpoint {str(path)!r}"
    state = load_virst_state(path, allow_pickle=allow_pickle)
    _, meta, _ = split_state(state)  # SAM2 stays torch tensors for the Meta key map
    numpy_state = {k: _to_numpy(v) for k, v in state.items() if "seg_model." not in k}
    report, _ = import_fusion_modules(model, numpy_state, parts_only=parts_only, where=where)
    if not meta:
        raise CheckpointError(f"{where} holds no SAM2 tensors (seg_model.*)")
    ours = flat_params(model.sam2)
    for key, value in sam2_params(meta, model.config.sam2, where).items():
        want = tuple(ours[key].get_value().shape)
        if tuple(value.shape) != want:
            raise CheckpointError(f"{where}: SAM2 {key!r} has shape {tuple(value.shape)}, the model's config "
                                  f"expects {want}")
        ours[key].set_value(jnp.asarray(value, dtype=ours[key].get_value().dtype))
        report.imported.append(f"sam2/{key}")
    return report
