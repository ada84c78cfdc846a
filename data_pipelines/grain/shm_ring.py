"""Reusable shared-memory slots that carry batches from a worker process to the main process.

Grain hands every array of an element over in a fresh POSIX shared-memory block. Touching a fresh block costs
about 1 us per 4 KiB page (tmpfs page allocation and zeroing): ~5 ms of worker CPU for the 5.5 MB of uint8
pixels of a batch of four short 128-px videos, ~15 % of the time it takes to decode those frames (4x that for
float32 pixels). Instead each worker keeps a few blocks (`RingWriter`) and rewrites them (the batch is collated
straight into its slot, `reserve` / `commit`); its element is a small `RingRef`. The main process
(`RingReader`) hands out arrays that are views of the slot, no copy, and marks the slot released when the last
of them is freed (a weakref finalizer: whatever holds the batch, a device buffer aliasing it included, holds
the slot).

Block header (uint64): written seq, released seq, orphaned, unlinked. The worker rewrites a slot only once it
is released; otherwise (the main process has not read it yet, or still holds that batch) the batch takes
Grain's ordinary path.
Lifetime: blocks are created by the worker (registered with Python's resource tracker, the safety net if a
process dies) and unlinked exactly once, under an flock of the block:
- by the worker when it drops a block: growing a slot (released blocks only), restoring a state (Grain drops
  the batches sent before a restore unread), exiting before the end of its data (the iterator was closed:
  nothing more is read), or exiting at the end of its data when the block was already read;
- by the main process when it releases a block its worker left behind at the end of the data (marked orphaned):
  a worker's last batches can still sit in Grain's buffers in the main process when the worker stops.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory, util

import numpy as np

try:
    import _posixshmem  # what multiprocessing.shared_memory uses on POSIX
except ImportError:  # pragma: no cover - Windows: no ring, Grain's own path
    _posixshmem = None

_HEADER = 64  # bytes: 4 x uint64 (written, released, orphaned, unlinked), padding; keeps arrays 64-byte aligned
_ALIGN = 64
_WRITTEN, _RELEASED, _ORPHANED, _UNLINKED = 0, 8, 16, 24


@dataclass(frozen=True)
class RingRef:
    """A batch in a ring block: arrays as (key, byte offset, shape, dtype str); `other` = non-array values."""

    name: str
    seq: int
    arrays: tuple
    other: dict


def available() -> bool:
    return _posixshmem is not None


def _get(buf, field: int) -> int:
    return struct.unpack_from("<Q", buf, field)[0]


def _set(buf, field: int, value: int) -> None:
    struct.pack_into("<Q", buf, field, value)


@contextmanager
def _locked(fd: int):
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _unlink(buf, name: str) -> None:
    """Unlink once (flag in the header; caller holds the lock), balancing the worker's tracker registration."""
    if not _get(buf, _UNLINKED):
        _set(buf, _UNLINKED, 1)
        try:
            _posixshmem.shm_unlink("/" + name)
        except FileNotFoundError:
            return
        resource_tracker.unregister("/" + name, "shared_memory")


def _drop(shm: shared_memory.SharedMemory, unread_will_be_read: bool) -> None:
    """Worker lets go of a block: unlink it, unless it is unread and will still be read (then orphan it)."""
    try:
        with _locked(shm._fd):
            if unread_will_be_read and _get(shm.buf, _RELEASED) != _get(shm.buf, _WRITTEN):
                _set(shm.buf, _ORPHANED, 1)
            else:
                _unlink(shm.buf, shm.name)
        shm.close()
    except (OSError, ValueError, BufferError):  # already closed
        pass


def _drop_all(blocks: list, state: dict) -> None:
    for shm in blocks:
        if shm is not None:
            _drop(shm, state["exhausted"])


class RingWriter:
    """Worker side: `put(batch dict)` -> `RingRef`, or the dict itself when its slot is not released yet."""

    def __init__(self, slots: int):
        self.slots = slots
        self._blocks: list = [None] * slots
        self._state = {"exhausted": False}  # set at the end of the data: unread blocks will still be read
        self._seq = 0
        self._reserved = None  # (block, layout) between reserve and commit
        # runs at worker exit (multiprocessing runs these finalizers; plain atexit hooks are skipped there)
        util.Finalize(self, _drop_all, args=(self._blocks, self._state), exitpriority=10)

    def mark_exhausted(self) -> None:
        self._state["exhausted"] = True

    def reset(self) -> None:
        """Drop all blocks: after a restore, Grain discards the batches sent before it unread."""
        _drop_all(self._blocks, {"exhausted": False})
        self._blocks[:] = [None] * self.slots
        self._state["exhausted"] = False
        self._reserved = None

    def reserve(self, spec: dict):
        """Arrays laid out in the next slot for `spec` ({key: (shape, dtype)}), to be filled and then handed to
        `commit`; None when that slot is not read yet (the batch then takes Grain's path)."""
        layout, size = [], _HEADER
        for k, (shape, dtype) in spec.items():
            dtype = np.dtype(dtype)
            layout.append((k, size, tuple(shape), dtype.str))
            size += -(-int(np.prod(shape)) * dtype.itemsize // _ALIGN) * _ALIGN
        slot = self._seq % self.slots
        shm = self._blocks[slot]
        if shm is not None:
            if _get(shm.buf, _RELEASED) != _get(shm.buf, _WRITTEN):
                return None
            if shm.size < size:
                _drop(shm, unread_will_be_read=False)  # released: read already
                shm = None
        if shm is None:  # 25 % headroom, whole MiB, so slots rarely regrow
            shm = shared_memory.SharedMemory(create=True, size=-(-(size * 5 // 4) // (1 << 20)) * (1 << 20))
            self._blocks[slot] = shm
        self._reserved = (shm, tuple(layout))
        return {k: np.frombuffer(shm.buf, dtype, int(np.prod(shape)), off).reshape(shape)
                for k, off, shape, dtype in layout}

    def commit(self, batch: dict) -> RingRef:
        """Publish the reserved slot; `batch` holds its arrays (as `reserve` returned them) and other values."""
        (shm, layout), self._reserved = self._reserved, None
        self._seq += 1
        _set(shm.buf, _WRITTEN, self._seq)
        keys = {k for k, *_ in layout}
        return RingRef(name=shm.name, seq=self._seq, arrays=layout,
                       other={k: v for k, v in batch.items() if k not in keys})

    @property
    def reserved(self) -> bool:
        return self._reserved is not None

    def put(self, batch: dict):
        """Copy a finished batch into the next slot -> `RingRef`, or the dict itself when the slot is unread."""
        arrays = {k: v for k, v in batch.items() if isinstance(v, np.ndarray)}
        dst = self.reserve({k: (v.shape, v.dtype) for k, v in arrays.items()})
        if dst is None:
            return batch
        for k, v in arrays.items():
            dst[k][...] = v
        return self.commit(batch)


class _Mapped:
    """The reader's mapping of one block: `live` batches still hold views of it; `evicted` once the reader
    stops tracking it (its descriptor is closed when nothing holds it any more)."""

    __slots__ = ("fd", "map", "live", "evicted")

    def __init__(self, fd: int, m: mmap.mmap):
        self.fd, self.map, self.live, self.evicted = fd, m, 0, False


class RingReader:
    """Main side: `read(RingRef)` -> batch dict whose arrays are views of the slot (no copy). The slot goes back
    to its worker when the last of those arrays is freed; until then the worker passes batches Grain's way."""

    def __init__(self, max_open: int = 64):
        self._open: OrderedDict[str, _Mapped] = OrderedDict()
        # the release runs in whichever thread frees a batch, and may run inside a locked section of this one
        # (a batch in a reference cycle collected by the GC there): reentrant
        self._lock = threading.RLock()
        self.max_open = max_open

    def _map(self, name: str) -> _Mapped:
        if name in self._open:
            self._open.move_to_end(name)
            return self._open[name]
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)  # not tracked: the worker's block
        self._open[name] = _Mapped(fd, mmap.mmap(fd, os.fstat(fd).st_size))
        while len(self._open) > self.max_open:  # blocks the workers have replaced
            self._evict(next(iter(self._open)))
        return self._open[name]

    def _evict(self, name: str) -> None:
        blk = self._open.pop(name)
        blk.evicted = True
        if not blk.live:
            os.close(blk.fd)  # the mapping itself goes with the last reference to it

    def read(self, ref: RingRef) -> dict:
        with self._lock:
            blk = self._map(ref.name)
            blk.live += 1
        base = np.frombuffer(blk.map, np.uint8)  # every array below is a view with `base` as its base
        out = {k: base[off:off + int(np.prod(shape)) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
               for k, off, shape, dtype in ref.arrays}
        weakref.finalize(base, self._release, blk, ref.name, ref.seq).atexit = False
        return {**out, **ref.other}

    def _release(self, blk: _Mapped, name: str, seq: int) -> None:
        with _locked(blk.fd):
            _set(blk.map, _RELEASED, seq)
            orphaned = _get(blk.map, _ORPHANED)
            if orphaned:  # its worker has stopped: nobody else will unlink it
                _unlink(blk.map, name)
        with self._lock:
            blk.live -= 1
            if orphaned and self._open.get(name) is blk:
                self._evict(name)
            elif blk.evicted and not blk.live:
                os.close(blk.fd)

    def close(self) -> None:
        with self._lock:
            while self._open:
                self._evict(next(iter(self._open)))
