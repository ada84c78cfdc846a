"""The stvl-jax model checkpoint format (written by `stvl convert import`, `save_model` and training).

    CKPT/
      stvl_config.json   {"format": "stvl-jax/qwen-vl", "format_version": 1, "model": <QwenVLConfig.to_dict()>,
                          "preprocessing": <PreprocessConfig.to_dict()>, ["stride": {window settings, fps},]
                          "params": {"count": N, "dtypes": {...}}, "source": {...}, "stvl_jax_version": "..."}

"preprocessing" is how the model's inputs were prepared (from the HF processor configs on import, the training
pipeline's on training); eval, streaming and generation helpers read it from here (`loading.read_preprocessing`).
Task sections (e.g. "stride") hold what a task's eval needs from training.
      params/            Orbax PyTree checkpoint: nested dict with string keys only, one array per parameter,
                         e.g. params["language_model"]["layers"]["mlp"]["up_proj"]["kernel"] (L, D, I)

`stvl_config.json` is written last: a directory without it is an incomplete write and is refused on read.
Arrays are stored uncompressed in their own dtype (bf16 stays bf16). Host numpy arrays (`stvl convert import`)
are written as one chunk each, without the defensive copy Orbax makes by default (the writer is synchronous and
never mutates them): chunked writes and zstd would each hold a second copy of the model in RAM (measured at 2B:
1.05x the checkpoint size unchunked vs 1.8x chunked, and 3x faster). The price is that a sharded restore reads
whole arrays and keeps its shards; sharded `jax.Array`s (`save_model` of a placed model, training) are stored
one chunk per shard by Orbax.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stvl_jax.errors import CheckpointError

FORMAT = "stvl-jax/qwen-vl"
FORMAT_VERSION = 1
CONFIG_FILE = "stvl_config.json"
PARAMS_DIR = "params"


class _StepMetadataFilter:
    """Drops Orbax's "Metadata file does not exist" warning: a training step directory keeps its checkpoint
    metadata one level up (CheckpointManager), so reading its params/ as a model checkpoint always logs it."""

    @staticmethod
    def filter(record) -> bool:
        return not str(record.msg).startswith("Metadata file does not exist")


_STEP_METADATA_FILTER = _StepMetadataFilter()


def _checkpointer():
    import logging

    import orbax.checkpoint as ocp

    logging.getLogger("absl").addFilter(_STEP_METADATA_FILTER)  # a no-op when already there

    th = ocp.type_handlers
    handlers = [(ty, th.NumpyHandler(deepcopy_host_arrays=False) if ty is np.ndarray else th.get_type_handler(ty))
                for ty in th.supported_types()]
    # weights barely compress (~20% for bf16) and zstd costs several copies of the model in RAM and 5x the time
    handler = ocp.PyTreeCheckpointHandler(use_compression=False,
                                          type_handler_registry=th.create_type_handler_registry(*handlers))
    return ocp.Checkpointer(handler)


# ------------------------------------------------------------------------------------------ trees
def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": x} -> {"a": {"b": {"c": x}}} (string keys only: Orbax restores int keys as strings)."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Inverse of `nest`."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "/"))
        else:
            out[path] = value
    return out


# ------------------------------------------------------------------------------------------ read
def read_info(path: str | Path) -> dict[str, Any]:
    """Parse and check CKPT/stvl_config.json; raise `CheckpointError` naming the path otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a directory")
    cfg = path / CONFIG_FILE
    if not cfg.is_file():
        hint = " (it looks like a Hugging Face directory; run `stvl convert import` first)" \
            if (path / "config.json").is_file() else ""
        raise CheckpointError(f"{str(path)!r} is not an stvl-jax checkpoint: no {CONFIG_FILE}{hint}")
    try:
        info = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(cfg)!r} is not valid JSON: {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        got = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise CheckpointError(f"{str(cfg)!r} has format {got!r}, expected {FORMAT!r}")
    if info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{str(cfg)!r} has format_version {info.get('format_version')!r}; this stvl-jax "
                              f"reads version {FORMAT_VERSION}")
    if not isinstance(info.get("model"), dict):
        raise CheckpointError(f"{str(cfg)!r} has no 'model' config")
    if not (path / PARAMS_DIR).is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} has no {PARAMS_DIR}/ directory")
    return info


def param_metadata(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{param path: (shape, dtype)} of a checkpoint, from Orbax metadata (no tensor is read)."""
    params_dir = Path(path) / PARAMS_DIR
    try:
        meta = _checkpointer().metadata(params_dir.absolute())
    except Exception as e:  # noqa: BLE001 - Orbax raises many types for a corrupt directory
        raise CheckpointError(f"cannot read the Orbax metadata of {str(params_dir)!r}: {e}") from None
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    return {k: (tuple(m.shape), np.dtype(m.dtype)) for k, m in flatten(tree).items()}


def restore_params(path: str | Path, targets: Mapping[str, Any]) -> dict[str, Any]:
    """Restore {param path: array} from CKPT/params (all parameters or any subset of them).

    targets: {path: jax.ShapeDtypeStruct with .sharding} -> sharded jax.Arrays, each device reading only its
    shard; or {path: np.dtype | None} -> host numpy arrays (None keeps the stored dtype). Restoring a few
    parameters at a time bounds host memory by those parameters (how export streams).
    """
    import jax
    import orbax.checkpoint as ocp

    def args(t):
        if isinstance(t, jax.ShapeDtypeStruct):
            return ocp.ArrayRestoreArgs(sharding=t.sharding, global_shape=t.shape, dtype=t.dtype)
        return ocp.RestoreArgs(restore_type=np.ndarray, dtype=t)

    params_dir = (Path(path) / PARAMS_DIR).absolute()
    restore_args = nest({k: args(t) for k, t in targets.items()})
    item = nest({k: (t if isinstance(t, jax.ShapeDtypeStruct) else 0) for k, t in targets.items()})
    try:
        tree = _checkpointer().restore(params_dir, args=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot restore {str(params_dir)!r}: {e}") from None
    return flatten(tree)


# ------------------------------------------------------------------------------------------ write
def header(model: Mapping[str, Any], params: Mapping[str, Any], source: Mapping[str, Any], *,
           preprocessing: Mapping[str, Any] | None = None, sections: Mapping[str, Any] | None = None
           ) -> dict[str, Any]:
    """The stvl_config.json of a checkpoint: model config dict, preprocessing config dict, task sections,
    {path: array} params (summarised), provenance."""
    from stvl_jax import __version__

    dtypes: dict[str, int] = {}
    for v in params.values():
        name = str(np.dtype(v.dtype))
        dtypes[name] = dtypes.get(name, 0) + int(np.prod(v.shape))
    out = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": dict(model)}
    if preprocessing is not None:
        out["preprocessing"] = dict(preprocessing)
    out.update(sections or {})
    out.update({"source": dict(source), "params": {"count": sum(dtypes.values()), "dtypes": dtypes},
                "stvl_jax_version": __version__})
    return out


def write_checkpoint(path: str | Path, model: Mapping[str, Any], params: Mapping[str, Any], *,
                     source: Mapping[str, Any], preprocessing: Mapping[str, Any] | None = None,
                     sections: Mapping[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write CKPT = params/ from a flat {path: numpy array | jax.Array} dict, then stvl_config.json (`header`).
    Sharded jax.Arrays are written shard by shard by their owners."""
    import jax
    import orbax.checkpoint as ocp

    path = Path(path)
    if path.exists():
        if not overwrite and (not path.is_dir() or any(path.iterdir())):
            raise CheckpointError(f"output {str(path)!r} already exists (pass --overwrite / overwrite=True)")
        if overwrite:
            (path / CONFIG_FILE).unlink(missing_ok=True)  # the checkpoint is invalid until rewritten
            shutil.rmtree(path / PARAMS_DIR, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    for key in params:
        if not all(key.split("/")):
            raise ValueError(f"bad parameter path {key!r}")
    tree = nest({k: (v if isinstance(v, jax.Array) else np.asarray(v)) for k, v in params.items()})
    _checkpointer().save((path / PARAMS_DIR).absolute(), args=ocp.args.PyTreeSave(tree))
    if jax.process_index() == 0:
        tmp = path / (CONFIG_FILE + ".tmp")
        info = header(model, params, source, preprocessing=preprocessing, sections=sections)
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        tmp.replace(path / CONFIG_FILE)
    return path


def dominant_dtype(specs: Iterable[tuple[tuple[int, ...], Any]]) -> np.dtype:
    """The dtype that holds most elements among (shape, dtype) pairs (a checkpoint's nominal dtype)."""
    counts: dict[np.dtype, int] = {}
    for shape, dtype in specs:
        counts[np.dtype(dtype)] = counts.get(np.dtype(dtype), 0) + int(np.prod(shape))
    return max(counts.items(), key=lambda kv: kv[1])[0]
