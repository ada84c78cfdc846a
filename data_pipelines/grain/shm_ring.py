"""Reusable shared-memory slots that carry batches from a worker process to the main process.

Grain hands every array of an element over in a fresh POSIX shared-memory block. Touching a fresh block costs
about 1 us per 4 KiB page (tmpfs page allocation and zeroing): ~5 ms of worker CPU for the 5.5 MB of uint8
pixels of a batch of four short 128-px videos, ~15 % of the time it takes to decode those frames (4x that for
float32 pixels). Instead each worker keeps a few blocks (`RingWriter`) and rewrites them; its element is a
small `RingRef`, and the main process (`RingReader`) copies the arrays out into its own memory (a plain copy)
and marks the slot released.

Block header (uint64): written seq, released seq, orphaned, unlinked. The worker rewrites a slot only once it
is released; otherwise (the main process has not read it yet) the batch takes Grain's ordinary path.
Lifetime: blocks are created by the worker (registered with Python's resource tracker, the safety net if a
process dies) and unlinked exactly once, under an flock of the block:
- by the worker when it drops a block: growing a slot (released blocks only), restoring a state (Grain drops
  the batches sent before a restore unread), exiting before the end of its data (the iterator was closed:
  nothing more is read), or exiting at the end of its data when the block was already read;
- by the main process when it reads a block its worker left behind at the end of the data (marked orphaned):
  a worker's last batches can still sit in Grain's buffers in the main process when the worker stops.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
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
        # runs at worker exit (multiprocessing runs these finalizers; plain atexit hooks are skipped there)
        util.Finalize(self, _drop_all, args=(self._blocks, self._state), exitpriority=10)

    def mark_exhausted(self) -> None:
        self._state["exhausted"] = True

    def reset(self) -> None:
        """Drop all blocks: after a restore, Grain discards the batches sent before it unread."""
        _drop_all(self._blocks, {"exhausted": False})
        self._blocks[:] = [None] * self.slots
        self._state["exhausted"] = False

    def put(self, batch: dict):
        arrays = {k: np.ascontiguousarray(v) for k, v in batch.items() if isinstance(v, np.ndarray)}
        layout, size = [], _HEADER
        for k, v in arrays.items():
            layout.append((k, size, v.shape, v.dtype.str))
            size += -(-v.nbytes // _ALIGN) * _ALIGN
        slot = self._seq % self.slots
        shm = self._blocks[slot]
        if shm is not None:
            if _get(shm.buf, _RELEASED) != _get(shm.buf, _WRITTEN):
                return batch  # not read yet: Grain's path
            if shm.size < size:
                _drop(shm, unread_will_be_read=False)  # released: read already
                shm = None
        if shm is None:  # 25 % headroom, whole MiB, so slots rarely regrow
            shm = shared_memory.SharedMemory(create=True, size=-(-(size * 5 // 4) // (1 << 20)) * (1 << 20))
            self._blocks[slot] = shm
        for k, off, shape, dtype in layout:
            np.frombuffer(shm.buf, dtype, int(np.prod(shape)), off).reshape(shape)[...] = arrays[k]
        self._seq += 1
        _set(shm.buf, _WRITTEN, self._seq)
        return RingRef(name=shm.name, seq=self._seq, arrays=tuple(layout),
                       other={k: v for k, v in batch.items() if k not in arrays})


class RingReader:
    """Main side: `read(RingRef)` -> batch dict of private copies; releases the slot."""

    def __init__(self, max_open: int = 64):
        self._open: OrderedDict[str, tuple[int, mmap.mmap]] = OrderedDict()
        self.max_open = max_open

    def _map(self, name: str) -> tuple[int, mmap.mmap]:
        if name in self._open:
            self._open.move_to_end(name)
            return self._open[name]
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)  # not tracked: the worker's block
        self._open[name] = fd, mmap.mmap(fd, os.fstat(fd).st_size)
        while len(self._open) > self.max_open:  # blocks the workers have replaced
            self._close(next(iter(self._open)))
        return self._open[name]

    def _close(self, name: str) -> None:
        fd, m = self._open.pop(name)
        m.close()
        os.close(fd)

    def read(self, ref: RingRef) -> dict:
        fd, m = self._map(ref.name)
        out = {k: np.frombuffer(m, dtype, int(np.prod(shape)), off).reshape(shape).copy()
               for k, off, shape, dtype in ref.arrays}
        with _locked(fd):
            _set(m, _RELEASED, ref.seq)
            orphaned = _get(m, _ORPHANED)
            if orphaned:  # its worker has stopped: nobody else will unlink it
                _unlink(m, ref.name)
        if orphaned:
            self._close(ref.name)
        return {**out, **ref.other}

    def close(self) -> None:
        while self._open:
            self._close(next(iter(self._open)))
