"""Tensor-level conversion HF <-> stvl-jax for Qwen-VL, driven by `qwen_vl_keys.key_map`.

Both directions stream: import pulls one HF tensor at a time through `get_tensor(name)` and writes it into a
preallocated array of the final (stacked) shape; export yields one HF tensor at a time. Neither holds more than
the model once plus one tensor, whatever the storage (safetensors shards, a torch state dict, Orbax).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np

from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.config import QwenVLConfig

from converters.qwen_vl_keys import Entry, canonical_hf_key, key_map, to_hf, to_ours

# HF buffers that are not parameters (never in our tree, safe to skip on import)
IGNORED_HF_KEYS = ("rotary_emb.inv_freq",)


def _check_entry_paths(entries: list[Entry], shapes: Mapping[str, tuple]) -> None:
    mapped = {p for e in entries for p in e.ours}
    missing = sorted(set(shapes) - mapped)
    extra = sorted(mapped - set(shapes))
    if missing or extra:  # a bug in the key map, not a user error
        raise AssertionError(f"key map out of sync with the model: unmapped {missing}, unknown {extra}")


def match_hf_names(config: QwenVLConfig, hf_names: Iterable[str],
                   get_shape: Callable[[str], tuple[int, ...]] | None = None) -> tuple[list[Entry], dict[str, str]]:
    """(the key map, {canonical HF name: name in the checkpoint}) after checking the checkpoint's names: none
    unknown, none missing, no name given twice (legacy and canonical); with `get_shape` also every shape (from
    headers, before any tensor is read). `CheckpointError` names the first offending tensors."""
    entries = key_map(config)
    from stvl_jax.models.qwen_vl.loading import param_specs

    _check_entry_paths(entries, param_specs(config))
    by_canonical = {}
    for name in hf_names:
        canon = canonical_hf_key(name)
        if canon in by_canonical:
            raise CheckpointError(f"checkpoint holds both {by_canonical[canon]!r} and {name!r}")
        by_canonical[canon] = name
    expected = {n: e for e in entries for n in e.hf_names()}
    tied_head = config.tie_word_embeddings and "lm_head.weight" in by_canonical
    unknown = sorted(n for n in by_canonical if n not in expected and not n.endswith(IGNORED_HF_KEYS)
                     and not (tied_head and n == "lm_head.weight"))
    if unknown:
        raise CheckpointError(f"checkpoint has {len(unknown)} tensor(s) this {config.family} config does not "
                              f"know, e.g. {unknown[:5]}")
    missing = sorted(n for n in expected if n not in by_canonical)
    if missing:
        raise CheckpointError(f"checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. {missing[:5]}")
    if get_shape is not None:
        for entry in entries:
            for name in entry.hf_names():
                _check_shape(by_canonical[name], tuple(get_shape(by_canonical[name])), entry.hf_shape)
    return entries, by_canonical


def params_from_hf(
    config: QwenVLConfig,
    hf_names: Iterable[str],
    get_tensor: Callable[[str], np.ndarray],
    *,
    dtype: np.dtype | None = None,
    progress: Callable[[int], None] | None = None,
    get_shape: Callable[[str], tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Build our flat params {path: array} from HF tensors.

    hf_names: every tensor name in the checkpoint (legacy Qwen2.5-VL names accepted); get_tensor(name) reads one.
    Unknown or missing names and shape mismatches raise `CheckpointError` naming the key and both shapes.
    dtype: None keeps each tensor's dtype (the checkpoint's), else casts.
    get_shape(name): a tensor's shape without reading it (e.g. from safetensors headers); when given, every
    shape is checked before the first tensor is read, so a mismatch fails in seconds, not after minutes.
    """
    entries, by_canonical = match_hf_names(config, hf_names, get_shape)
    from stvl_jax.models.qwen_vl.loading import param_specs

    shapes = param_specs(config)
    out: dict[str, np.ndarray] = {}
    for entry in entries:
        layer_shapes = tuple(shapes[p][0][1:] if entry.layers else shapes[p][0] for p in entry.ours)
        for i, name in enumerate(entry.hf_names()):
            value = np.asarray(get_tensor(by_canonical[name]))
            _check_shape(by_canonical[name], tuple(value.shape), entry.hf_shape)
            for path in entry.ours:  # allocated at the first layer: its dtype is the checkpoint's
                if path not in out:
                    out[path] = np.empty(shapes[path][0], dtype or value.dtype)
                elif dtype is None and value.dtype != out[path].dtype:  # stacking would silently cast
                    raise CheckpointError(f"tensor {by_canonical[name]!r} is {value.dtype} but layer 0 of the "
                                          f"same parameter is {out[path].dtype}; pick one with --dtype")
            dests = [out[p][i] if entry.layers else out[p] for p in entry.ours]
            to_ours(entry.hook, value, layer_shapes, dests)  # written in place, layer i of the stack
            if progress:
                progress(1)
    return out


def _check_shape(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if got != want:
        raise CheckpointError(f"tensor {name!r} has shape {got}, the config expects {want}")


def params_to_hf(config: QwenVLConfig, get_param: Callable[[str], np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (canonical HF name, tensor) for every HF tensor, reading our params through get_param(path)."""
    for entry in key_map(config):
        arrays = [np.asarray(get_param(p)) for p in entry.ours]
        for i, name in enumerate(entry.hf_names()):
            ours = [a[i] for a in arrays] if entry.layers else arrays
            yield name, to_hf(entry.hook, ours, entry.hf_shape)


def num_hf_tensors(config: QwenVLConfig) -> int:
    return sum(len(e.hf_names()) for e in key_map(config))


def load_flat_params(model, flat: Mapping[str, np.ndarray]) -> None:
    """Copy {path: array} into an nnx model's Params in place (shapes checked)."""
    import jax.numpy as jnp

    from stvl_jax.nn.params import flat_params

    for key, var in flat_params(model).items():
        if key not in flat:
            raise CheckpointError(f"no value for parameter {key!r}")
        value = flat[key]
        cur = var.get_value()
        if tuple(value.shape) != tuple(cur.shape):
            raise CheckpointError(f"parameter {key!r}: checkpoint shape {tuple(value.shape)} != model shape "
                                  f"{tuple(cur.shape)}")
        var.set_value(jnp.asarray(value, dtype=cur.dtype))
