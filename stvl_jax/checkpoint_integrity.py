"""Checkpoint integrity: a checksum per array recorded at save, verified on restore; short read errors.

Orbax/TensorStore (orbax-checkpoint 0.12.8) checksum only the zarr3 shard *index* (crc32c), not the chunk data,
and offer no per-array digest: a flipped byte inside an array's data restores silently. So every writer of an
stvl-jax checkpoint also writes

    CKPT/integrity.json  {"format": "stvl-jax/integrity", "version": 1, "algorithm": "wsum32x2",
                          "arrays": {"params/visual/patch_embed/kernel": {"digest": "16 hex", "dtype", "shape"},
                                     "opt_state/...": ..., "train_state/step": ...}}

before the checkpoint is committed (training: inside the Orbax step directory, which is renamed into place;
model checkpoints: before stvl_config.json). The digest is a position-weighted sum of the array's bit
patterns modulo 2^32, twice with independent weights (64 bits): any single-bit flip changes it (the weights are
odd), a zeroed or swapped block almost surely does. It is a sum over elements, so on an accelerator it is one
jitted reduction over the *global* array whatever its sharding (each device reduces its shards, XLA adds the
partial sums) and the value does not depend on the mesh: a checkpoint saved on 8 devices verifies when
restored onto 1. Host arrays get the same value from two vectorised numpy reductions (see below).

Checkpoints without integrity.json (written before it existed) restore unverified.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from stvl_jax.errors import CheckpointError

INTEGRITY_FILE = "integrity.json"
FORMAT = "stvl-jax/integrity"
ALGORITHM = "wsum32x2"


# ------------------------------------------------------------------------------------------ digests
# Element i (row-major over the global array) with bit pattern w_i (widened to uint32) contributes, mod 2^32,
#   d1 += w_i * A[i mod K]      d2 += w_i * B[(i div K) mod 2^22]      (K = 1024; A, B odd pseudo-random)
# Odd weights: any change of one element changes both sums. On device this is one fused elementwise reduction;
# on the host the same sums are colsum(W) . A and rowsum(W) . B over the (rows, K) view of the flat array:
# two vectorised numpy reductions instead of an elementwise hash (XLA's CPU reductions run at ~0.1-0.3 GB/s).
_K_BITS, _R_BITS = 10, 22
_K = 1 << _K_BITS


def _mix(x, xp):
    """uint32 -> uint32 avalanche (murmur3's finaliser constants), numpy or jax.numpy."""
    h = x * xp.uint32(0x9E3779B1)
    h = h ^ (h >> xp.uint32(15))
    h = h * xp.uint32(0x85EBCA77)
    return h ^ (h >> xp.uint32(13))


def _weights(index, xp):
    """(A, B) odd weights of column and row indices (uint32 arrays)."""
    return _mix(index, xp) | xp.uint32(1), _mix(index ^ xp.uint32(0x5BD1E995), xp) | xp.uint32(1)


def _device_digest_and_finite(x):
    """One array (traced) -> ((2,) uint32 digest, () bool all-finite)."""
    import jax
    import jax.numpy as jnp

    words = _words(x, jnp)
    idx = jnp.zeros(x.shape, jnp.uint32)  # global row-major index (wraps mod 2^32) from per-dimension iotas
    stride = 1
    for d in reversed(range(x.ndim)):
        idx = idx + jax.lax.broadcasted_iota(jnp.uint32, x.shape, d) * jnp.uint32(stride & 0xFFFFFFFF)
        stride *= x.shape[d]
    a = _weights(idx & jnp.uint32(_K - 1), jnp)[0]
    b = _weights(idx >> jnp.uint32(_K_BITS), jnp)[1]
    digest = jnp.stack([jnp.sum(words * a, dtype=jnp.uint32), jnp.sum(words * b, dtype=jnp.uint32)])
    finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
    return digest, finite


def _words(x, xp):
    """Bit patterns as uint32 (1- and 2-byte types widened)."""
    dt = np.dtype(x.dtype)
    if dt == np.bool_:
        return x.astype(xp.uint32)
    unsigned = {1: xp.uint8, 2: xp.uint16, 4: xp.uint32}[dt.itemsize]
    if xp is np:
        return x.view(unsigned).astype(np.uint32, copy=False)
    import jax

    return jax.lax.bitcast_convert_type(x, unsigned).astype(xp.uint32)


_HOST_ROWS = 256  # rows of K elements per block: the block stays in cache for its second reduction
_TASK_ROWS = 4096  # rows per thread-pool task (16 MiB of fp32); numpy's reductions release the GIL


def _host_rows(body: np.ndarray, start: int, stop: int, check_finite: bool):
    """(colsum, rowsum, finite) of rows [start, stop) of the (rows, K) view."""
    colsum = np.zeros(_K, np.uint32)
    rowsum = np.zeros(stop - start, np.uint32)
    finite = True
    for r in range(start, stop, _HOST_ROWS):
        block = body[r: min(r + _HOST_ROWS, stop)]
        words = _words(block, np)
        colsum += words.sum(axis=0, dtype=np.uint32)
        rowsum[r - start: r - start + len(block)] = words.sum(axis=1, dtype=np.uint32)
        if check_finite and finite:
            finite = bool(np.isfinite(block).all())
    return colsum, rowsum, finite


def _host_segment(flat: np.ndarray, offset: int, check_finite: bool) -> tuple[int, int, bool]:
    """(d1, d2, finite) contributions of a contiguous run of elements starting at global flat index `offset`."""
    from concurrent.futures import ThreadPoolExecutor

    check_finite = check_finite and (np.issubdtype(flat.dtype, np.inexact) or flat.dtype == _bf16())
    a_all = _weights(np.arange(_K, dtype=np.uint32), np)[0]

    def b(rows):
        return _weights((np.asarray(rows, np.uint64) & np.uint64((1 << _R_BITS) - 1)).astype(np.uint32), np)[1]

    d1 = d2 = np.uint32(0)
    finite = True
    with np.errstate(over="ignore"):
        head = min((-offset) % _K, flat.size)  # the end of a row that started before this run
        pieces = [(flat[:head], offset), (flat[head + (flat.size - head) // _K * _K:],
                                          offset + head + (flat.size - head) // _K * _K)]
        for piece, start in pieces:
            if piece.size:
                words = _words(piece, np)
                col = start % _K
                d1 += np.sum(words * a_all[col: col + piece.size], dtype=np.uint32)
                d2 += words.sum(dtype=np.uint32) * b([start // _K])[0]
                finite = finite and not (check_finite and not np.isfinite(piece).all())
        n_rows = (flat.size - head) // _K
        body = flat[head: head + n_rows * _K].reshape(n_rows, _K)
        ranges = [(r, min(r + _TASK_ROWS, n_rows)) for r in range(0, n_rows, _TASK_ROWS)]
        if len(ranges) > 1:
            with ThreadPoolExecutor(min(len(ranges), os.cpu_count() or 1, 16)) as pool:
                parts = list(pool.map(lambda rng: _host_rows(body, *rng, check_finite), ranges))
        else:
            parts = [_host_rows(body, *rng, check_finite) for rng in ranges]
        first_row = (offset + head) // _K
        for (r0, _), (colsum, rowsum, f) in zip(ranges, parts):
            d1 += np.sum(colsum * a_all, dtype=np.uint32)
            d2 += np.sum(rowsum * b(first_row + r0 + np.arange(len(rowsum))), dtype=np.uint32)
            finite = finite and f
    return int(d1), int(d2), finite


def _host_digest(x, check_finite: bool) -> tuple[tuple[int, int], bool]:
    """A numpy array, or a CPU jax.Array: shard by shard when each shard is a contiguous run of the global
    array (sharded along the first axis only: no copy), else assembled on the host first."""
    import jax

    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        shards = [sh for sh in x.addressable_shards if sh.replica_id == 0]
        if all(all(sl == slice(None) or (sl.start in (None, 0) and sl.stop in (None, n))
                   for sl, n in zip(sh.index[1:], x.shape[1:])) for sh in shards):
            inner = int(np.prod(x.shape[1:], dtype=np.int64))
            d1 = d2 = 0
            finite = True
            for sh in shards:
                first = sh.index[0].start or 0 if x.ndim else 0
                e1, e2, f = _host_segment(np.asarray(sh.data).reshape(-1), first * inner, check_finite)
                d1, d2, finite = (d1 + e1) & 0xFFFFFFFF, (d2 + e2) & 0xFFFFFFFF, finite and f
            return (d1, d2), finite
    e1, e2, f = _host_segment(np.ascontiguousarray(np.asarray(x)).reshape(-1), 0, check_finite)
    return (e1, e2), f


_JIT = None


def digests(flat: Mapping[str, Any], *, check_finite: bool = False) -> tuple[dict[str, str], dict[str, bool]]:
    """{name: array (jax.Array, sharded or not, or numpy)} -> ({name: 16-hex digest}, {name: all finite}).

    The digest does not depend on where the array lives or how it is sharded. jax.Arrays on an accelerator are
    reduced where they live (one compiled program for the whole dict; every process of a multi-process run
    must call this with the same global arrays); numpy arrays and fully addressable CPU jax.Arrays on the host.
    The finite flags are computed when `check_finite` (always on device)."""
    import jax

    global _JIT
    host, device = {}, {}
    for k, v in flat.items():
        if not isinstance(v, jax.Array):
            host[k] = np.asarray(v)
        elif v.is_fully_addressable and all(d.platform == "cpu" for d in v.sharding.device_set):
            host[k] = v  # on CPU: numpy's reductions over the shards (XLA's CPU reductions are slower)
        else:
            device[k] = v
    hexed, finite = {}, {}
    for k, v in host.items():
        d, finite[k] = _host_digest(v, check_finite)
        hexed[k] = "%08x%08x" % (int(d[0]), int(d[1]))
    if device:
        if _JIT is None:
            _JIT = jax.jit(lambda tree: {k: _device_digest_and_finite(v) for k, v in tree.items()})
        for k, (d, f) in jax.device_get(_JIT(device)).items():
            hexed[k], finite[k] = "%08x%08x" % (int(d[0]), int(d[1])), bool(f)
    return hexed, finite


def record(flat: Mapping[str, Any], digest_map: Mapping[str, str]) -> dict[str, Any]:
    """The integrity.json document for arrays {name: array} with their `digests`."""
    arrays = {k: {"digest": digest_map[k], "dtype": str(np.dtype(v.dtype)), "shape": list(np.shape(v))}
              for k, v in flat.items()}
    return {"format": FORMAT, "version": 1, "algorithm": ALGORITHM, "arrays": arrays}


def write(directory, doc: Mapping[str, Any]) -> None:
    """Write directory/integrity.json atomically (a reader never sees half of it); local or epath (gs://)."""
    from etils import epath

    directory = epath.Path(directory)
    tmp = directory / (INTEGRITY_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(directory / INTEGRITY_FILE)


def read(directory) -> dict[str, dict] | None:
    """{array name: {"digest", "dtype", "shape"}} recorded in directory/integrity.json; None if there is none."""
    from etils import epath

    path = epath.Path(directory) / INTEGRITY_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or doc.get("algorithm") != ALGORITHM:
            raise ValueError(f"format {doc.get('format')!r} algorithm {doc.get('algorithm')!r}")
        return dict(doc["arrays"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{str(path)!r} is damaged ({e})") from None


def verify(where: str, recorded: Mapping[str, dict] | None, restored: Mapping[str, Any], *,
           prefix: str = "") -> None:
    """Check restored arrays {name: array} against `recorded` (from `read`), as `prefix + name`.

    A restored dtype other than the stored one is checked after casting back when that cast is exact (bf16
    stored, restored as fp32); a lossy restore cast cannot be checked and is skipped. Raises CheckpointError
    naming `where` and the first damaged array."""
    if not recorded:
        return
    todo = {}
    for name, value in restored.items():
        entry = recorded.get(prefix + name)
        if entry is None:
            continue
        stored = np.dtype(entry["dtype"]) if entry["dtype"] != "bfloat16" else _bf16()
        if list(np.shape(value)) != list(entry["shape"]):
            raise CheckpointError(f"{where}: array {prefix + name!r} has shape {tuple(np.shape(value))}, its "
                                  f"integrity record says {tuple(entry['shape'])}")
        if np.dtype(value.dtype) != stored:
            if not np.can_cast(stored, value.dtype, "safe"):
                continue
            value = value.astype(stored)
        todo[name] = value
    got, _ = digests(todo)
    for name in todo:  # in restore order: the first damaged array is named
        if got[name] != recorded[prefix + name]["digest"]:
            raise CheckpointError(f"{where}: array {prefix + name!r} does not match its checksum (the checkpoint "
                                  f"data is damaged)")


def _bf16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def non_finite(finite: Mapping[str, bool]) -> list[str]:
    return [k for k, ok in finite.items() if not ok]


def require_finite(tensors: Iterable[tuple[str, np.ndarray]], where: str) -> Iterator[tuple[str, np.ndarray]]:
    """Pass (name, tensor) pairs through; raise CheckpointError at the first tensor with a NaN or inf."""
    for name, t in tensors:
        a = np.asarray(t)
        if np.issubdtype(a.dtype, np.inexact) or a.dtype == _bf16():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bad:
                raise CheckpointError(f"{where}: tensor {name!r} has {bad} non-finite value(s) (NaN/inf) of "
                                      f"{a.size}; pass --allow-non-finite to export it anyway")
        yield name, t


# ------------------------------------------------------------------------------------------ read errors
_READING = re.compile(r'Error reading "([^"]+)"')


def _chain(error: BaseException) -> list[BaseException]:
    chain, e = [], error
    while e is not None and len(chain) < 10:  # Orbax wraps TensorStore's error ("See full details: ...")
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def error_text(error: BaseException) -> str:
    """The messages of an exception and of the ones it wraps (innermost first)."""
    return "\n".join(str(x) for x in reversed(_chain(error)))


def _quiet_closed_loop() -> None:
    """After a failed restore, TensorStore may still post a callback to Orbax's closed asyncio loop; Python then
    prints 'Exception ignored ... RuntimeError: Event loop is closed' with a traceback under the one-line error.
    That one message is dropped; every other unraisable exception goes to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_stvl_quiet_closed_loop", False):
        return

    def hook(unraisable):
        if not (isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    hook._stvl_quiet_closed_loop = True
    sys.unraisablehook = hook


def read_error(where: str, error: BaseException, names: Iterable[str], *, prefix: str = "") -> CheckpointError:
    """An Orbax/TensorStore restore failure -> one CheckpointError line naming `where` and the array.

    TensorStore names the chunk it failed on ('language_model.norm.weight/0.0'); Orbax joins tree keys with
    '.', so it is matched back to one of `names` (our '/'-joined paths) and named as `prefix + name`."""
    _quiet_closed_loop()
    chain = _chain(error)
    text = error_text(error)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    array = None
    m = _READING.search(text)
    if m:
        chunk = m.group(1).rsplit("/", 1)[0]
        array = prefix + next((n for n in names if n.replace("/", ".") == chunk), chunk.replace(".", "/"))
    missing = ("Not enough data", "is not valid for value of size", "NOT_FOUND", "OUT_OF_RANGE", "No such file",
               "FileNotFoundError", "Truncated")
    if any(s in text for s in missing) or any(isinstance(x, FileNotFoundError) for x in chain):
        reason = "its data is missing or truncated"
    else:
        if m:  # TensorStore's own reason, after 'Error reading "chunk" in OCDBT database at local file "...": '
            first = text[m.end():].split("\n", 1)[0].split('": ', 1)[-1]
        reason = first if len(first) <= 200 else first[:197] + "..."
    return CheckpointError(f"{where}: array {array!r} cannot be read: {reason}" if array
                           else f"{where}: cannot be read: {reason}")
