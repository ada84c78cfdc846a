"""Streaming safetensors I/O on numpy (bf16/fp8 through `ml_dtypes`), one tensor at a time.

The format: 8-byte little-endian header length N, N bytes of JSON {name: {"dtype", "shape", "data_offsets"},
"__metadata__": {...}}, then the raw little-endian bytes. Reading parses only headers (cheap: `inspect`, the
converter's key and shape checks) and reads a tensor with one `readinto` into a fresh array, so memory holds
just that tensor; `safetensors.numpy` cannot read bf16 and its `load_file` loads whole files. Writing plans
the shards from (name, shape, dtype) first, then streams tensors into them in order.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from stvl_jax.errors import CheckpointError

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8), "I16": np.dtype(np.int16),
    "U16": np.dtype(np.uint16), "I32": np.dtype(np.int32), "U32": np.dtype(np.uint32),
    "I64": np.dtype(np.int64), "U64": np.dtype(np.uint64), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F32": np.dtype(np.float32), "F64": np.dtype(np.float64),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
CODES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 << 20  # the reference implementation's limit


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def read_header(file: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """({name: TensorInfo}, __metadata__) of one .safetensors file; `CheckpointError` naming it if corrupt."""
    file = Path(file)
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{str(file)!r} is not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{str(file)!r} is not a safetensors file (header length {n} of a "
                                  f"{size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{str(file)!r} has a corrupt safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{str(file)!r} has a corrupt safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, h in header.items():
        try:
            code, shape, (lo, hi) = h["dtype"], tuple(int(s) for s in h["shape"]), h["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{str(file)!r}: corrupt header entry for {name!r}: {h!r}") from None
        if code not in DTYPES:
            raise CheckpointError(f"{str(file)!r}: tensor {name!r} has dtype {code!r}, not one of {sorted(DTYPES)}")
        dtype = DTYPES[code]
        if hi - lo != int(np.prod(shape)) * dtype.itemsize or not 0 <= lo <= hi <= size - 8 - n:
            raise CheckpointError(f"{str(file)!r}: tensor {name!r} {shape} {code} has bad data offsets "
                                  f"[{lo}, {hi}) (file data is {size - 8 - n} bytes)")
        out[name] = TensorInfo(file, dtype, shape, 8 + n + lo, hi - lo)
    return out, meta


def read_tensor(info: TensorInfo, handle=None) -> np.ndarray:
    """One tensor as a fresh numpy array (no mmap: RSS stays at the size of what is held)."""
    arr = np.empty(info.shape, info.dtype)
    own = handle is None
    f = open(info.file, "rb") if own else handle
    try:
        f.seek(info.start)
        got = f.readinto(memoryview(arr.reshape(-1).view(np.uint8)))
    finally:
        if own:
            f.close()
    if got != info.nbytes:
        raise CheckpointError(f"{str(info.file)!r} is truncated ({got} of {info.nbytes} bytes for a tensor)")
    return arr


# ------------------------------------------------------------------------------------------ write
def parse_size(text: str | int) -> int:
    """'5GB' -> 5_000_000_000, '500MiB' -> 524_288_000 (transformers' convention: GB = 10^9, GiB = 2^30)."""
    if isinstance(text, int):
        return text
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    t = text.strip().upper()
    for unit, mult in units.items():
        if t.endswith(unit):
            try:
                return int(float(t[: -len(unit)]) * mult)
            except ValueError:
                break
    if t.isdigit():
        return int(t)
    raise CheckpointError(f"shard size {text!r} is not a size like 5GB, 500MB or 2GiB")


def plan_shards(specs: Iterable[tuple[str, tuple[int, ...], np.dtype]], max_shard_bytes: int
                ) -> list[list[tuple[str, tuple[int, ...], np.dtype]]]:
    """Greedy in order: a new shard starts when the next tensor would overflow the current one."""
    shards: list[list] = [[]]
    size = 0
    for name, shape, dtype in specs:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, tuple(shape), np.dtype(dtype)))
        size += nbytes
    return shards


def shard_file_names(n: int, prefix: str = "model") -> list[str]:
    if n == 1:
        return [f"{prefix}.safetensors"]
    return [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def write_shards(out_dir: str | Path, shards: list[list[tuple[str, tuple[int, ...], np.dtype]]],
                 tensors: Iterator[tuple[str, np.ndarray]], *, metadata: dict[str, str] | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, str]:
    """Write `shards` (from `plan_shards`), pulling the tensors in the same order from `tensors`.

    Returns the weight map {name: file name}. Writes `model.safetensors.index.json` when there are several
    shards (as `save_pretrained` does). Each tensor must match its planned name, shape and dtype.
    """
    out_dir = Path(out_dir)
    files = shard_file_names(len(shards))
    weight_map = {}
    total = 0
    for file_name, shard in zip(files, shards):
        header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for name, shape, dtype in shard:
            nbytes = int(np.prod(shape)) * dtype.itemsize
            header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # align the data section to 8 bytes, as the reference writer does
        tmp = out_dir / (file_name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(struct.pack("<Q", len(blob)) + blob)
                for name, shape, dtype in shard:
                    got_name, value = next(tensors)
                    value = np.asarray(value)
                    if (got_name, value.shape, value.dtype) != (name, shape, dtype):
                        raise AssertionError(f"tensor stream out of plan: got {got_name} {value.shape} "
                                             f"{value.dtype}, planned {name} {shape} {dtype}")
                    f.write(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
                    weight_map[name] = file_name
                    if progress:
                        progress(1)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a half-written shard is never left behind
            raise
        os.replace(tmp, out_dir / file_name)
        total += offset
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return weight_map
