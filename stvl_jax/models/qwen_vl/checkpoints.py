"""Where `load_model` and training read weights from: one checkpoint *source* per on-disk format.

    stvl-jax     CKPT/stvl_config.json + params/ (Orbax): `stvl convert import`, `save_model`, training steps
    huggingface  DIR/config.json + safetensors (one file, or shards + model.safetensors.index.json), read in
                 place through the converter's key map (`converters.hf_source.HFSource`)

A source gives the model config, `info` shaped like stvl_config.json ("model", "source" provenance,
"preprocessing"), every parameter's (shape, dtype) in our layout (`param_specs`), and `restore(targets)`, which
builds each parameter straight into its sharded `jax.Array`.

Layers: models never import `converters` (converters -> models). Formats other than the native one are
registered by "module:attribute" and imported on first use (`register_format`), so `load_model(hf_dir)` works
while this package has no import-time dependency on the converters; the HF reader lives with the key map it
reuses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from stvl_jax import checkpoint_io
from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.qwen_vl.config import QwenVLConfig

Specs = dict[str, tuple[tuple[int, ...], np.dtype]]

# bytes of parameters read to host per Orbax call: tensorstore's read buffers of one call live until its arrays
# are placed, so this bounds the transient RAM above the placed model
RESTORE_BATCH_BYTES = 512 << 20


class CheckpointSource:
    """An opened checkpoint. Subclasses set `config` and `info` in `__init__` (user errors: `CheckpointError`)."""

    kind = ""
    config: QwenVLConfig
    info: dict[str, Any]

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def param_specs(self) -> Specs:
        """{param path: (shape, dtype)} as stored, in our layout; nothing is read."""
        raise NotImplementedError

    def restore(self, targets: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
        """{path: ShapeDtypeStruct with .sharding} -> sharded arrays, cast to the target dtypes."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


LEGACY_VISION_KEYS = ("image_mean", "image_std")  # under "model"/"vision" before "preprocessing" existed


class StvlCheckpoint(CheckpointSource):
    """The native format (`stvl_jax.checkpoint_io`), restored by Orbax."""

    kind = "stvl-jax"

    def __init__(self, path):
        super().__init__(path)
        self.info = checkpoint_io.read_info(self.path)
        model = dict(self.info["model"])
        if isinstance(model.get("vision"), dict):  # checkpoints before "preprocessing" kept mean/std here
            model["vision"] = {k: v for k, v in model["vision"].items() if k not in LEGACY_VISION_KEYS}
        try:
            self.config = QwenVLConfig.from_dict(model, source=f"{self.path}/{checkpoint_io.CONFIG_FILE}")
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
        self._specs: Specs | None = None

    def param_specs(self) -> Specs:
        if self._specs is None:
            self._specs = checkpoint_io.param_metadata(self.path)
        return self._specs

    def restore(self, targets):
        """Arrays stored as one chunk (everything `stvl convert import` writes), and every array when this is
        the only process, are read once into host buffers (cast on read) and cut into their shards
        (`array_from_blocks`; one device adopts the buffer itself). Orbax's sharded restore would instead read
        a whole one-chunk array once per distinct shard and copy it twice more (zero-fill, device put).
        Chunked arrays on several processes keep Orbax's sharded restore: each process reads its shards."""
        chunks = checkpoint_io.chunk_shapes(self.path)
        via_host = {k: t for k, t in targets.items()
                    if jax.process_count() == 1 or chunks.get(k) == tuple(t.shape)}
        out = checkpoint_io.restore_params(self.path, {k: t for k, t in targets.items() if k not in via_host}) \
            if len(via_host) < len(targets) else {}
        for batch in _batches(via_host, RESTORE_BATCH_BYTES):
            host = checkpoint_io.restore_params(self.path, {k: np.dtype(t.dtype) for k, t in batch.items()})
            for k, t in batch.items():
                array = host.pop(k)
                out[k] = array_from_blocks(t.shape, t.dtype, t.sharding, lambda index, _, a=array: _block(a, index))
        return out


def _block(array: np.ndarray, index: tuple[slice, ...]) -> np.ndarray:
    """array[index] in an aligned buffer (the array itself when the index is all of it: already aligned)."""
    if all(s.indices(n)[:2] == (0, n) for s, n in zip(index, array.shape)):
        return array
    block = array[index]
    out = checkpoint_io.aligned_empty(block.shape, block.dtype)
    out[...] = block
    return out


def _batches(targets: Mapping[str, jax.ShapeDtypeStruct], limit: int) -> list[dict[str, jax.ShapeDtypeStruct]]:
    out: list[dict] = [{}]
    size = 0
    for key, t in targets.items():
        nbytes = int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
        if out[-1] and size + nbytes > limit:
            out.append({})
            size = 0
        out[-1][key] = t
        size += nbytes
    return [b for b in out if b]


# ------------------------------------------------------------------------------------------ formats
def _is_stvl(path: Path) -> bool:
    return path.is_dir() and (path / checkpoint_io.CONFIG_FILE).is_file()


def _is_hf(path: Path) -> bool:
    """An HF directory (config.json or weight files; which of them is missing is the reader's error to name) or
    one .safetensors file."""
    if path.is_file():
        return path.suffix == ".safetensors"
    return path.is_dir() and ((path / "config.json").is_file() or any(
        next(path.glob(pattern), None) for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth")))


# name -> (detect(path), CheckpointSource subclass or "module:attribute" imported on first use); tried in order
FORMATS: dict[str, tuple[Callable[[Path], bool], type[CheckpointSource] | str]] = {
    "stvl-jax": (_is_stvl, StvlCheckpoint),
    "huggingface": (_is_hf, "converters.hf_source:HFSource"),
}


def register_format(name: str, detect: Callable[[Path], bool], source: type[CheckpointSource] | str) -> None:
    """Teach `open_checkpoint` (and so `load_model` and training) another format."""
    FORMATS[name] = (detect, source)


def open_checkpoint(path: str | Path) -> CheckpointSource:
    """The source for `path`, by its format; `CheckpointError` naming it if none applies."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    for detect, source in FORMATS.values():
        if detect(path):
            if isinstance(source, str):
                module, attr = source.split(":")
                source = getattr(importlib.import_module(module), attr)
            return source(path)
    if path.is_dir() and (path / checkpoint_io.PARAMS_DIR).is_dir():  # an incomplete write
        checkpoint_io.read_info(path)  # names what is missing
    if (path / "model" / checkpoint_io.CONFIG_FILE).is_file():  # a SAM2 / VIRST training step
        raise CheckpointError(f"{str(path)!r} is a training checkpoint step; its model is {str(path / 'model')!r}")
    raise CheckpointError(f"{str(path)!r} is not an stvl-jax checkpoint (no {checkpoint_io.CONFIG_FILE}) nor a "
                          f"Hugging Face directory (no config.json, no safetensors)")


def tokenizer_dir(path: str | Path) -> str:
    """Where the tokenizer that travels with a checkpoint is: CKPT/tokenizer for stvl-jax checkpoints, the
    directory itself for an HF directory (tokenizer files sit next to its config.json)."""
    path = Path(path)
    if FORMATS["huggingface"][0](path) and not _is_stvl(path):
        return str(path if path.is_dir() else path.parent)
    return str(path / "tokenizer")


# ------------------------------------------------------------------------------------------ placement
def array_from_blocks(shape: tuple[int, ...], dtype, sharding: jax.sharding.Sharding,
                      read_block: Callable[[tuple[slice, ...], jax.Device], np.ndarray | jax.Array]) -> jax.Array:
    """A sharded array whose every addressable shard is `read_block(index, device)` (index: slices into `shape`):
    a host array, or an array the reader already placed on `device` (e.g. transposed there).

    Each distinct block is read once; on CPU devices, which adopt aligned host buffers, replicas get a copy, so
    no two device buffers alias one host buffer (donating one must not change another). Host memory holds the
    blocks of one array at most."""
    blocks: dict[tuple, np.ndarray] = {}
    placed = []

    def data(device, index):
        key = tuple(s.indices(n)[:2] for s, n in zip(index, shape))
        if key in blocks:
            if device.platform != "cpu" or isinstance(blocks[key], jax.Array):  # device_put copies these
                return blocks[key]
            copy = checkpoint_io.aligned_empty(blocks[key].shape, blocks[key].dtype)
            copy[...] = blocks[key]
            return copy
        block = blocks[key] = read_block(index, device)
        if block.shape != tuple(hi - lo for lo, hi in key):
            raise AssertionError(f"read_block returned {block.shape} for the block {index} of {shape}")
        return block

    for device, index in sharding.addressable_devices_indices_map(shape).items():
        placed.append(jax.device_put(data(device, index), device))
    blocks.clear()
    return jax.make_array_from_single_device_arrays(shape, sharding, placed, dtype=dtype)
