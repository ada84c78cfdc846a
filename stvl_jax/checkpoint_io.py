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
      integrity.json     a checksum per array, verified on restore (`stvl_jax.checkpoint_integrity`)

`stvl_config.json` is written last: a directory without it is an incomplete write and is refused on read.
Arrays are stored uncompressed in their own dtype (bf16 stays bf16). Host numpy arrays (`stvl convert import`)
are written as one chunk each, without the defensive copy Orbax makes by default (the writer is synchronous and
never mutates them): chunked writes and zstd would each hold a second copy of the model in RAM (measured at 2B:
1.05x the checkpoint size unchunked vs 1.8x chunked, and 3x faster). The price is that a sharded restore reads
whole arrays and keeps its shards; sharded `jax.Array`s (`save_model` of a placed model, training) are stored
one chunk per shard by Orbax.

Host restores (numpy targets) land in page-aligned buffers (`aligned_empty`), which `jax.device_put` onto a CPU
device adopts without a copy; `stvl_jax.models.qwen_vl.checkpoints` builds sharded arrays from them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stvl_jax import checkpoint_integrity as integrity
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


def aligned_empty(shape: tuple[int, ...], dtype, align: int = 4096) -> np.ndarray:
    """np.empty on a page-aligned buffer: `jax.device_put` onto a CPU device adopts it instead of copying
    (measured with jax 0.10: zero-copy at 4 KiB alignment, a copy at numpy's default 16 bytes), which halves the
    memory traffic and the peak RAM of loading onto CPU devices."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def _aligned_numpy_handler():
    """Orbax's NumpyHandler, restoring into `aligned_empty` buffers (tensorstore writes into them directly, from
    memory-mapped files) instead of arrays tensorstore allocates: no further copy when they become CPU device
    buffers."""
    import asyncio

    import orbax.checkpoint as ocp
    import tensorstore as ts
    from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils

    def context(parent):
        # Local files memory-mapped rather than read into tensorstore's buffers (one copy, file -> `out`, and
        # no transient buffer the size of the array), and no OCDBT cache pool (Orbax's 100 MB pool made every
        # read go through it). Measured on a 0.7 GB array on a loaded 2-core VM: 0.5-0.8 s instead of 8 s.
        return ts.Context(ts.Context.Spec({"file_io_mode": {"mode": "memmap"},
                                           "cache_pool#ocdbt": {"total_bytes_limit": 0}}), parent)

    class AlignedNumpyHandler(ocp.type_handlers.NumpyHandler):
        async def deserialize(self, infos, args=None):
            args = args or [ocp.RestoreArgs()] * len(infos)

            async def read(info, arg):
                await info.await_path_creation()
                spec = ts_utils.build_array_read_spec(
                    info, use_ocdbt=info.is_ocdbt_checkpoint, metadata_key=self._metadata_key,
                    raise_array_data_missing_error=info.raise_array_data_missing_error, target_dtype=arg.dtype)
                t = await ts.open(ts.Spec(spec.json), open=True, context=context(info.ts_context))
                out = aligned_empty(t.shape, t.dtype.numpy_dtype)
                await ts.array(out).write(t)
                return out

            return await asyncio.gather(*(read(i, a) for i, a in zip(infos, args)))

    return AlignedNumpyHandler(deepcopy_host_arrays=False)


def _checkpointer():
    import logging

    import orbax.checkpoint as ocp

    logging.getLogger("absl").addFilter(_STEP_METADATA_FILTER)  # a no-op when already there

    th = ocp.type_handlers
    handlers = [(ty, _aligned_numpy_handler() if ty is np.ndarray else th.get_type_handler(ty))
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
def read_info(path: str | Path, formats: tuple[str, ...] = (FORMAT,)) -> dict[str, Any]:
    """Parse and check CKPT/stvl_config.json (its "format" one of `formats`: Qwen-VL unless a model family's
    loader says otherwise, e.g. SAM2's); raise `CheckpointError` naming the path otherwise."""
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
    if not isinstance(info, dict) or info.get("format") not in formats:
        got = info.get("format") if isinstance(info, dict) else type(info).__name__
        want = " or ".join(repr(f) for f in formats)
        raise CheckpointError(f"{str(cfg)!r} has format {got!r}, expected {want}")
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
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"cannot read the Orbax metadata of {str(params_dir)!r}: {first}") from None
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    if not isinstance(tree, Mapping):  # Orbax returns None when _METADATA or the OCDBT manifest is gone
        raise CheckpointError(f"checkpoint {str(path)!r}: {PARAMS_DIR}/ has no readable Orbax metadata "
                              f"(_METADATA or manifest.ocdbt missing or damaged)")
    return {k: (tuple(m.shape), np.dtype(m.dtype)) for k, m in flatten(tree).items()}


def chunk_shapes(path: str | Path) -> dict[str, tuple[int, ...] | None]:
    """{param path: stored chunk shape} (None where Orbax does not say)."""
    tree = _checkpointer().metadata((Path(path) / PARAMS_DIR).absolute())
    tree = getattr(tree, "item_metadata", tree)
    tree = getattr(tree, "tree", tree)
    out = {}
    for k, m in flatten(tree).items():
        chunks = getattr(getattr(m, "storage", None), "chunk_shape", None)
        out[k] = tuple(chunks) if chunks is not None else None
    return out


def restore_params(path: str | Path, targets: Mapping[str, Any], *, verify: bool = True) -> dict[str, Any]:
    """Restore {param path: array} from CKPT/params (all parameters or any subset of them).

    targets: {path: jax.ShapeDtypeStruct with .sharding} -> sharded jax.Arrays, each device reading only its
    shard; or {path: np.dtype | None} -> host numpy arrays (None keeps the stored dtype). Restoring a few
    parameters at a time bounds host memory by those parameters (how export streams).
    verify: check each array against the checkpoint's integrity.json (`stvl_jax.checkpoint_integrity`).
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
    except Exception as e:  # noqa: BLE001 - TensorStore's errors are many-line dumps: one line naming the array
        raise integrity.read_error(f"checkpoint {str(path)!r}", e, targets, prefix=PARAMS_DIR + "/") from None
    out = flatten(tree)
    if verify:
        integrity.verify(f"checkpoint {str(path)!r}", integrity.read(path), out, prefix=PARAMS_DIR + "/")
    return out


# ------------------------------------------------------------------------------------------ write
def header(model: Mapping[str, Any], params: Mapping[str, Any], source: Mapping[str, Any], *,
           preprocessing: Mapping[str, Any] | None = None, sections: Mapping[str, Any] | None = None,
           fmt: str = FORMAT) -> dict[str, Any]:
    """The stvl_config.json of a checkpoint: model config dict, preprocessing config dict, task sections,
    {path: array} params (summarised), provenance."""
    from stvl_jax import __version__

    dtypes: dict[str, int] = {}
    for v in params.values():
        name = str(np.dtype(v.dtype))
        dtypes[name] = dtypes.get(name, 0) + int(np.prod(v.shape))
    out = {"format": fmt, "format_version": FORMAT_VERSION, "model": dict(model)}
    if preprocessing is not None:
        out["preprocessing"] = dict(preprocessing)
    out.update(sections or {})
    out.update({"source": dict(source), "params": {"count": sum(dtypes.values()), "dtypes": dtypes},
                "stvl_jax_version": __version__})
    return out


def write_checkpoint(path: str | Path, model: Mapping[str, Any], params: Mapping[str, Any], *,
                     source: Mapping[str, Any], preprocessing: Mapping[str, Any] | None = None,
                     sections: Mapping[str, Any] | None = None, overwrite: bool = False, fmt: str = FORMAT) -> Path:
    """Write CKPT = params/ from a flat {path: numpy array | jax.Array} dict, then stvl_config.json (`header`;
    `fmt`: the model family's format string).
    Sharded jax.Arrays are written shard by shard by their owners."""
    import jax
    import orbax.checkpoint as ocp

    path = Path(path)
    if path.exists():
        if not overwrite and (not path.is_dir() or any(path.iterdir())):
            raise CheckpointError(f"output {str(path)!r} already exists (pass --overwrite / overwrite=True)")
        if overwrite:
            (path / CONFIG_FILE).unlink(missing_ok=True)  # the checkpoint is invalid until rewritten
            (path / integrity.INTEGRITY_FILE).unlink(missing_ok=True)
            shutil.rmtree(path / PARAMS_DIR, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    for key in params:
        if not all(key.split("/")):
            raise ValueError(f"bad parameter path {key!r}")
    tree = nest({k: (v if isinstance(v, jax.Array) else np.asarray(v)) for k, v in params.items()})
    doc = integrity.record({f"{PARAMS_DIR}/{k}": v for k, v in params.items()},
                           {f"{PARAMS_DIR}/{k}": d for k, d in integrity.digests(params)[0].items()})
    _checkpointer().save((path / PARAMS_DIR).absolute(), args=ocp.args.PyTreeSave(tree))
    if jax.process_index() == 0:
        integrity.write(path, doc)  # before stvl_config.json, which marks the checkpoint complete
        tmp = path / (CONFIG_FILE + ".tmp")
        info = header(model, params, source, preprocessing=preprocessing, sections=sections, fmt=fmt)
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        tmp.replace(path / CONFIG_FILE)
    return path


def dominant_dtype(specs: Iterable[tuple[tuple[int, ...], Any]]) -> np.dtype:
    """The dtype that holds most elements among (shape, dtype) pairs (a checkpoint's nominal dtype)."""
    counts: dict[np.dtype, int] = {}
    for shape, dtype in specs:
        counts[np.dtype(dtype)] = counts.get(np.dtype(dtype), 0) + int(np.prod(shape))
    return max(counts.items(), key=lambda kv: kv[1])[0]
