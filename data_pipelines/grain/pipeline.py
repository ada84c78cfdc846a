"""Pipeline entry point: `make_pipeline(PipelineConfig) -> BatchIterator`.

Grain dataset chain: records (sharded by JAX process, shuffled per epoch, repeated) -> `ExampleBuilder`
(decode/patchify/tokenize/positions; Grain's per-record RNG) -> `_Batches` (groups `batch_size` good examples,
pads them with `collate`, and carries the skip markers met on the way) -> `mp_prefetch` over `worker_count`
processes. The batching runs in the worker processes, so the main process receives one padded batch per step
(through a few reusable shared-memory blocks per worker, `shm_ring`, as views of them) and only
counts skips. The per-record transform runs in the worker's own thread, one record at a time (no read
threads): one decode thread per worker, as configured by `decode_threads`.

Each worker batches its own slice of the record stream (Grain's `mp_prefetch` slicing), so which examples share
a batch depends on `worker_count`; for a given config the batches are deterministic, and `get_state()` /
`set_state()` (Grain's iterator state plus the counters, taken between batches) restore to exactly the
following batches.
"""

from __future__ import annotations

from collections import Counter

import grain
import numpy as np

from data_pipelines.errors import AnnotationError, VideoDecodeError
from data_pipelines.grain import shm_ring
from data_pipelines.grain.collate import collate
from data_pipelines.grain.config import PipelineConfig, _parse_shard
from data_pipelines.grain.examples import ExampleBuilder
from data_pipelines.grain.sources import open_source
from data_pipelines.strefer.time_tokens import check_time_tokens
from data_pipelines.strefer.training import FEATURES as STREFER_FEATURES
from data_pipelines.tokenizer import open_tokenizer


def _shard_options(cfg: PipelineConfig):
    if cfg.shard == "jax_process":
        return grain.sharding.ShardByJaxProcess(drop_remainder=False)
    if cfg.shard == "none":
        return grain.sharding.NoSharding()
    i, n = _parse_shard(cfg.shard)
    return grain.sharding.ShardOptions(shard_index=i, shard_count=n, drop_remainder=False)


class BuildExample(grain.transforms.RandomMap):
    """The per-record transform (module-level so worker processes can unpickle it)."""

    def __init__(self, cfg: PipelineConfig):
        self.builder = ExampleBuilder(cfg)

    def random_map(self, element, rng):
        return self.builder(element, rng)


class _EpochShuffle(grain.MapDataset):
    """A fresh permutation of the parent per epoch (index // len), from numpy seeded by (seed, epoch), cached.
    Grain's `shuffle` computes each index with `index_shuffle`, which costs ~0.5 ms per record on small sets
    (it is meant for huge ones); this costs 4 bytes per record of memory (the sources already keep 16)."""

    def __init__(self, parent: grain.MapDataset, seed: int):
        super().__init__(parent)
        self._seed, self._epoch, self._perm = seed, None, None

    def __len__(self) -> int:
        return len(self._parent)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, i = divmod(index, len(self._parent))
        if epoch != self._epoch:
            perm = np.random.default_rng([self._seed, epoch]).permutation(len(self._parent))
            self._perm, self._epoch = perm.astype(np.int32) if len(perm) < 2**31 else perm, epoch
        return self._parent[int(self._perm[i])]

    def __str__(self) -> str:
        return f"_EpochShuffle(seed={self._seed})"


def _shard_records(cfg: PipelineConfig) -> grain.MapDataset:
    opts = _shard_options(cfg)
    features = STREFER_FEATURES if cfg.format == "strefer" else None  # the two features it reads
    return grain.MapDataset.source(open_source(cfg.index, features))[opts.shard_index::opts.shard_count]


def build_example_dataset(cfg: PipelineConfig, records: grain.MapDataset | None = None) -> grain.IterDataset:
    """Examples (or skip markers `{"__skip__": reason, ...}`) in sampling order, unbatched."""
    ds = _shard_records(cfg) if records is None else records
    if cfg.shuffle:
        ds = _EpochShuffle(ds, cfg.seed)  # reshuffled every epoch of the repeat below
    ds = ds.repeat(cfg.num_epochs).random_map(BuildExample(cfg), seed=cfg.seed)
    # No read threads: the transform runs in the iterating thread, one record at a time.
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))


class _Batches(grain.IterDataset):
    """Examples -> {"batch": padded batch | RingRef | None, "examples", "frames", "skipped": [skip markers]}.

    Skip markers met while filling a batch travel with it (after the last batch, alone), so the consumer can
    count them; with `strict` the first one is sent at once, without a batch. When repeating forever, `records`
    skips in a row (a whole pass over this shard without one usable example) are sent alone, flagged `stalled`,
    so that an endless stream of unusable records is an error rather than a hang. With `ring_slots` (in worker
    processes) the batch is written to a reusable shared-memory slot (`shm_ring`).
    """

    def __init__(self, parent: grain.IterDataset, cfg: PipelineConfig, pad_id: int, records: int,
                 ring_slots: int = 0):
        super().__init__(parent)
        self.cfg, self.pad_id, self.records, self.ring_slots = cfg, pad_id, records, ring_slots

    def __iter__(self):
        return _BatchesIterator(self._parent.__iter__(), self.cfg, self.pad_id, self.records, self.ring_slots)


class _BatchesIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, cfg: PipelineConfig, pad_id: int, records: int,
                 ring_slots: int):
        super().__init__(parent)
        self.cfg, self.pad_id, self.records = cfg, pad_id, max(records, 1)
        self.ring = shm_ring.RingWriter(ring_slots) if ring_slots else None

    def __next__(self) -> dict:
        cfg, good, skipped = self.cfg, [], []
        while len(good) < cfg.batch_size:
            try:
                ex = next(self._parent)
            except StopIteration:
                if self.ring is not None:
                    self.ring.mark_exhausted()  # what is in flight now is still to be read
                if good and not cfg.drop_remainder:
                    break
                if skipped:  # report the skips after the last batch, then stop on the next call
                    return {"batch": None, "examples": 0, "frames": 0, "skipped": skipped}
                raise
            if "__skip__" in ex:
                skipped.append(ex)
                if cfg.strict:
                    return {"batch": None, "examples": 0, "frames": 0, "skipped": skipped}
                if cfg.num_epochs is None and not good and len(skipped) >= self.records:
                    return {"batch": None, "examples": 0, "frames": 0, "skipped": skipped, "stalled": True}
                continue
            good.append(ex)
        frames = sum(int(e.pop("num_frames", 0)) for e in good)
        # in a worker, collate writes straight into a shared-memory slot when one is free
        batch = collate(good, length_buckets=cfg.length_buckets, pad_id=self.pad_id, padding_side=cfg.padding_side,
                        patch_buckets=cfg.patch_buckets, alloc=None if self.ring is None else self.ring.reserve)
        if self.ring is not None and self.ring.reserved:
            batch = self.ring.commit(batch)
        return {"batch": batch, "examples": len(good), "frames": frames, "skipped": skipped}

    def get_state(self):
        return self._parent.get_state()  # taken between batches: nothing is held back

    def set_state(self, state):
        self._parent.set_state(state)
        if self.ring is not None:
            self.ring.reset()  # batches written before the restore are dropped by Grain, never released


def _pad_id(cfg: PipelineConfig) -> int:
    """The tokenizer's pad id; for the `strefer` format, first a check that it holds the `<k>` time tokens."""
    tok = open_tokenizer(cfg.tokenizer, "data.pipeline.tokenizer")
    if cfg.format == "strefer":
        check_time_tokens(tok, cfg.strefer.num_time_tokens, "data.pipeline.tokenizer")
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def build_batch_dataset(cfg: PipelineConfig, records: grain.MapDataset | None = None) -> grain.IterDataset:
    """The whole chain, batched (in `worker_count` processes when > 0); elements as `_Batches` yields them."""
    # slots: Grain's per-worker buffer and the interleave buffer in the main process, plus two in flight
    ring_slots = 2 * cfg.worker_buffer_size + 3 if cfg.worker_count > 0 and shm_ring.available() else 0
    records = _shard_records(cfg) if records is None else records
    ds = _Batches(build_example_dataset(cfg, records), cfg, _pad_id(cfg), len(records), ring_slots)
    if cfg.worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # Grain's worker processes read absl flags; a library caller has none
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                         per_worker_buffer_size=cfg.worker_buffer_size))
    return ds


class BatchIterator:
    """Iterator of padded batch dicts. `stats` holds per-reason skip counts and example/frame totals."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        records = _shard_records(cfg)
        self.records = len(records)  # records in this process's shard of the index (one pass)
        self.dataset = build_batch_dataset(cfg, records)
        self._it = iter(self.dataset)
        self._ring = shm_ring.RingReader()
        self.skipped: Counter = Counter()
        self.examples = 0
        self.frames = 0
        self.batches = 0
        self.skip_log: list[str] = []  # first few skip messages, for the end-of-run report
        self.first_skips: dict[str, str] = {}  # reason -> the first record skipped for it (not in the state)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        while True:
            out = next(self._it)
            for ex in out["skipped"]:
                self._skip(ex)
            if out["batch"] is not None:
                break
            if out.get("stalled") and self.batches == 0:
                raise AnnotationError("no_usable_record", f"every record of {self.cfg.index!r} was skipped in a "
                                      f"whole pass; {self.report()}\nfirst skips:\n  " + "\n  ".join(self.skip_log))
        self.examples += int(out["examples"])
        self.frames += int(out["frames"])
        self.batches += 1
        if isinstance(out["batch"], shm_ring.RingRef):
            return self._ring.read(out["batch"])
        # Arrays Grain passed in shared memory are a numpy subclass that unlinks the block when freed; hand out
        # plain ndarray views of them (no copy; the view keeps the block alive).
        return {k: v.view(np.ndarray) if isinstance(v, np.ndarray) else v for k, v in out["batch"].items()}

    def _skip(self, ex: dict) -> None:
        if self.cfg.strict:
            if ex["kind"] == "video":
                raise VideoDecodeError(ex["path"], f"{ex['message']} (record {ex['source']})")
            raise AnnotationError(ex["__skip__"], ex["message"])
        self.skipped[ex["__skip__"]] += 1
        self.first_skips.setdefault(ex["__skip__"], ex["source"])
        if len(self.skip_log) < 20:
            self.skip_log.append(f"{ex['source']}: {ex['__skip__']}: {ex.get('path', '')} {ex['message']}".strip())

    @property
    def stats(self) -> dict:
        """Counters for metrics: {'examples', 'frames', 'batches', 'skipped': {reason: n}, 'skipped_total'}."""
        return {"examples": self.examples, "frames": self.frames, "batches": self.batches,
                "skipped": dict(sorted(self.skipped.items())), "skipped_total": sum(self.skipped.values())}

    def report(self) -> str:
        s = self.stats
        lines = [f"{s['examples']} examples in {s['batches']} batches; skipped {s['skipped_total']}"]
        lines += [f"  {reason}: {n}" for reason, n in s["skipped"].items()]
        return "\n".join(lines)

    def get_state(self) -> dict:
        """JSON-serializable state (take it between batches)."""
        return {"grain": self._it.get_state(), "skipped": dict(self.skipped),
                "examples": self.examples, "frames": self.frames, "batches": self.batches}

    def set_state(self, state: dict) -> None:
        self._it.set_state(state["grain"])
        self.skipped = Counter(state["skipped"])
        self.examples, self.frames, self.batches = state["examples"], state["frames"], state["batches"]

    def close(self) -> None:
        """Stop the worker processes (also done when the iterator is garbage-collected)."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
        self._ring.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_pipeline(cfg: PipelineConfig) -> BatchIterator:
    """Build the iterator (opens the index and reads the tokenizer's pad id; the workers load the tokenizer
    and read the videos lazily)."""
    return BatchIterator(cfg)
