"""Pipeline entry point: `make_pipeline(PipelineConfig) -> BatchIterator`.

Grain DataLoader (IndexSampler sharded by JAX process, shuffled per epoch, `worker_count` processes) runs the
per-record work (`ExampleBuilder`: decode/patchify/tokenize/positions); the main process counts skipped
records per reason, groups `batch_size` good examples and pads them (`collate`). `get_state()` /
`set_state()` wrap the DataLoader iterator state plus the counters; a state taken between batches restores
to exactly the following batches.
"""

from __future__ import annotations

import json
from collections import Counter

import grain

from data_pipelines.errors import AnnotationError, VideoDecodeError
from data_pipelines.grain.collate import collate
from data_pipelines.grain.config import PipelineConfig, _parse_shard
from data_pipelines.grain.examples import ExampleBuilder
from data_pipelines.grain.sources import open_source


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


def build_data_loader(cfg: PipelineConfig) -> grain.DataLoader:
    if cfg.worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # Grain's worker processes read absl flags; a library caller has none
            flags.FLAGS.mark_as_parsed()
    source = open_source(cfg.index)
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=_shard_options(cfg), shuffle=cfg.shuffle,
        num_epochs=cfg.num_epochs, seed=cfg.seed)
    return grain.DataLoader(data_source=source, sampler=sampler, operations=[BuildExample(cfg)],
                            worker_count=cfg.worker_count, worker_buffer_size=cfg.worker_buffer_size)


class BatchIterator:
    """Iterator of padded batch dicts. `stats` holds per-reason skip counts and example/frame totals."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.loader = build_data_loader(cfg)
        self._it = iter(self.loader)
        self.skipped: Counter = Counter()
        self.examples = 0
        self.frames = 0
        self.batches = 0
        self.skip_log: list[str] = []  # first few skip messages, for the end-of-run report
        self._pad_id = None

    def __iter__(self):
        return self

    def _pad(self) -> int:
        if self._pad_id is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.cfg.tokenizer)
            self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return self._pad_id

    def __next__(self) -> dict:
        good = []
        while len(good) < self.cfg.batch_size:
            try:
                ex = next(self._it)
            except StopIteration:
                if good and not self.cfg.drop_remainder:
                    break
                raise
            if "__skip__" in ex:
                self._skip(ex)
                continue
            good.append(ex)
        self.examples += len(good)
        self.frames += int(sum(int(e.pop("num_frames", 0)) for e in good))
        self.batches += 1
        return collate(good, length_buckets=self.cfg.length_buckets, pad_id=self._pad(),
                       padding_side=self.cfg.padding_side, patch_buckets=self.cfg.patch_buckets)

    def _skip(self, ex: dict) -> None:
        if self.cfg.strict:
            if ex["kind"] == "video":
                raise VideoDecodeError(ex["path"], f"{ex['message']} (record {ex['source']})")
            raise AnnotationError(ex["__skip__"], ex["message"])
        self.skipped[ex["__skip__"]] += 1
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
        raw = self._it.get_state()
        return {"grain": raw.decode() if isinstance(raw, bytes) else raw, "skipped": dict(self.skipped),
                "examples": self.examples, "frames": self.frames, "batches": self.batches}

    def set_state(self, state: dict) -> None:
        g = state["grain"]
        self._it.set_state(g.encode() if isinstance(g, str) else g)
        self.skipped = Counter(state["skipped"])
        self.examples, self.frames, self.batches = state["examples"], state["frames"], state["batches"]

    def save_state(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.get_state(), f)

    def load_state(self, path: str) -> None:
        with open(path) as f:
            self.set_state(json.load(f))


def make_pipeline(cfg: PipelineConfig) -> BatchIterator:
    """Build the iterator (opens the index; the tokenizer and videos are read lazily in the workers)."""
    return BatchIterator(cfg)
