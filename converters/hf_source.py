"""A Hugging Face directory as a checkpoint source: `stvl_jax.load_model(hf_dir)` and `model.checkpoint=hf_dir`
in training read the safetensors in place, without `stvl convert import`.

Registered with `stvl_jax.models.qwen_vl.checkpoints.FORMATS` by name ("converters.hf_source:HFSource"), so the
model package does not import the converters. Names and shapes are checked from the headers first, by the
same code and key map as `stvl convert import` (`qwen_vl_convert.match_hf_names`, `qwen_vl_keys`). Then every
device's shard of every parameter is cut from the memory-mapped files: for a transposed parameter (Linear,
Conv3d) only the shard's rows and columns of each layer's HF matrix are copied (`qwen_vl_keys.matrix_block`),
into a page-aligned buffer the device adopts (CPU) or receives, and the device transposes them; other
parameters go through `qwen_vl_keys.part_to_ours` with the shard's index (views, then one copy). The pages of
each HF tensor are released from this process once its part is copied, so RAM holds the placed model plus one
parameter's shard in HF layout while it is transposed (largest parameters first, while little is placed).
"""

from __future__ import annotations

import functools
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from converters.hf_checkpoint import HFCheckpoint, PickleRefused
from converters.qwen_vl_config import from_hf_dict
from converters.qwen_vl_convert import match_hf_names
from converters.qwen_vl_preprocess import hf_dir_preprocessing
from converters.qwen_vl_keys import Entry, matrix_block, part_to_ours, split_parts
from converters.safetensors_io import TensorInfo
from stvl_jax.checkpoint_io import aligned_empty
from stvl_jax.errors import CheckpointError
from stvl_jax.models.qwen_vl.checkpoints import CheckpointSource, array_from_blocks
from stvl_jax.models.qwen_vl.loading import param_specs

_PAGE = mmap.PAGESIZE


@functools.partial(jax.jit, static_argnums=(1, 2))
def _transpose(hf: jax.Array, block: tuple[int, ...], dtype) -> jax.Array:
    """(layers, rows, cols) HF matrices -> our block: each transposed, then split into our axes (C order)."""
    return jnp.swapaxes(hf, 1, 2).reshape(block).astype(dtype)


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="hf-load")


class HFSource(CheckpointSource):
    """An HF Qwen-VL directory (or one .safetensors file next to its config.json), opened for `restore`."""

    kind = "huggingface"

    def __init__(self, path):
        super().__init__(path)
        try:
            self._ck = HFCheckpoint(self.path)
        except PickleRefused as e:
            raise CheckpointError(f"{str(e.file)!r} is a PyTorch pickle, which load_model does not read "
                                  f"(unpickling can run code); convert the directory once with `stvl convert "
                                  f"import --hf DIR --out CKPT --allow-pickle`") from None
        self.config = from_hf_dict(self._ck.config())
        directory = self._ck.path if self._ck.path.is_dir() else self._ck.path.parent
        preprocessing, provenance = hf_dir_preprocessing(directory, self.config)
        self.info = {"model": self.config.to_dict(), "source": {**self._ck.source_info(), **provenance},
                     "preprocessing": preprocessing.to_dict()}
        entries, by_canonical = match_hf_names(self.config, self._ck.names, lambda n: self._ck.spec(n)[0])
        shapes = param_specs(self.config)
        # our path -> (entry, which of its parts, the HF tensors: one per layer when stacked)
        self._plan: dict[str, tuple[Entry, int, list[TensorInfo]]] = {}
        self._specs = {}
        for entry in entries:
            infos = [self._ck.tensor_info(by_canonical[n]) for n in entry.hf_names()]
            dtypes = sorted({str(i.dtype) for i in infos})
            if len(dtypes) > 1:  # stacking would silently cast
                raise CheckpointError(f"{str(self.path)!r}: the layers of {entry.hf!r} have different dtypes "
                                      f"{dtypes}; pass param_dtype to load_model")
            for k, ours in enumerate(entry.ours):
                self._plan[ours] = (entry, k, infos)
                self._specs[ours] = (shapes[ours][0], infos[0].dtype)
        self._maps: dict[Path, mmap.mmap] = {}
        self._lock = threading.Lock()

    def param_specs(self):
        return dict(self._specs)

    def restore(self, targets):
        out = {}
        # largest first: a transposed parameter briefly exists twice (its HF layout and ours), which costs least
        # before the rest of the model is placed
        for path, t in sorted(targets.items(), key=lambda kv: -int(np.prod(kv[1].shape))):
            out[path] = array_from_blocks(t.shape, t.dtype, t.sharding,
                                          lambda index, device, p=path, d=t.dtype: self.read_block(p, index, d, device))
        return {path: out[path] for path in targets}

    def read_block(self, path: str, index: tuple[slice, ...], dtype, device=None) -> np.ndarray | jax.Array:
        """Block `index` of parameter `path` (our layout), cast to `dtype`. Transposed blocks (Linear, Conv3d)
        with a `device`: the block's rows and columns of each HF matrix are copied out in HF layout and the
        device transposes them (2-2.5x faster than numpy's tiled transpose on a CPU device, and the host only
        copies for an accelerator). Otherwise a fresh page-aligned host array."""
        entry, part, infos = self._plan[path]
        shape = self._specs[path][0]
        block = tuple(len(range(*s.indices(n))) for s, n in zip(index, shape))
        layers = range(*index[0].indices(shape[0])) if entry.layers else range(1)
        inner_shape, inner_index = (shape[1:], index[1:]) if entry.layers else (shape, index)
        hook, parts = split_parts(entry.hook, self._tensor(infos[0]))
        rc = None if device is None else matrix_block(hook, parts[part].shape, tuple(inner_shape), tuple(inner_index))
        del parts
        if rc is not None:
            rows, cols = rc
            hf = aligned_empty((len(layers), rows.stop - rows.start, cols.stop - cols.start), infos[0].dtype)
            list(_pool().map(lambda j: self._copy_matrix(entry, part, infos[layers[j]], rc, hf[j]),
                             range(len(layers))))
            return _transpose(jax.device_put(hf, device), block, np.dtype(dtype))
        out = aligned_empty(block, dtype)
        if entry.layers:  # stacked: layer j of the block is HF tensor layers[j]
            # layers in threads (numpy's copies release the GIL): the transposes are most of the load time
            list(_pool().map(lambda j: self._convert(entry, part, infos[layers[j]], shape[1:], index[1:], out[j]),
                             range(len(layers))))
        else:
            self._convert(entry, part, infos[0], shape, index, out)
        return out

    def _copy_matrix(self, entry: Entry, part: int, info: TensorInfo, rc: tuple[slice, slice], out) -> None:
        """out[...] = x[rows, cols] of the (out, in) matrix x of one HF tensor's part."""
        _, parts = split_parts(entry.hook, self._tensor(info))
        x = parts[part].reshape(parts[part].shape[0], -1)
        out[...] = x[rc]
        del parts, x
        self._release(info)

    def _convert(self, entry: Entry, part: int, info: TensorInfo, shape, index, out) -> None:
        hook, parts = split_parts(entry.hook, self._tensor(info))
        part_to_ours(hook, parts[part], tuple(shape), out, tuple(index))
        del parts
        self._release(info)

    # ---------------------------------------------------------------- memory-mapped tensors
    def _map(self, file: Path) -> mmap.mmap:
        with self._lock:  # layers are read in threads: one mapping per file
            if file not in self._maps:
                with open(file, "rb") as f:
                    self._maps[file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            return self._maps[file]

    def _tensor(self, info: TensorInfo) -> np.ndarray:
        """The tensor as a read-only view of its file's mapping (nothing is read until it is indexed)."""
        count = int(np.prod(info.shape))
        return np.frombuffer(self._map(info.file), info.dtype, count, info.start).reshape(info.shape)

    def _release(self, info: TensorInfo) -> None:
        """Drop the tensor's pages from this process (they stay in the page cache): without this, every
        touched page of the mapping would count in RSS until the end, a second copy of the model."""
        lo = info.start - info.start % _PAGE
        length = info.start + info.nbytes - lo
        if length > 0 and hasattr(mmap, "MADV_DONTNEED"):
            self._map(info.file).madvise(mmap.MADV_DONTNEED, lo, length)

    def close(self) -> None:
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a caller still holds a view; the mapping goes with it
                pass
        self._maps.clear()
        self._ck.close()
