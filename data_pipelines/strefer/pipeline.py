"""The engine as Apache Beam transforms: videos -> clips -> metadata -> masklets -> instructions -> examples.

    examples = pipeline | StreferEngine(video_paths, cfg, dead_letter_path="out/dead_letter.jsonl")

Each stage is a DoFn whose models load once per worker in `setup` (no global state: Dataflow, Flink and Spark
workers build their own). Videos may be local or remote (`data_pipelines.storage`: a remote one is copied to the
worker first). A failed element goes to the dead letters ({"stage", "element", "reason", "message"}, one JSON
line each, sorted, so a re-run writes the same file) and bumps the Beam counter `dead_<reason>`; other counters:
videos, clips, short_tails_dropped, entities_without_masklet, pairs, family_<f>.
Examples are (clip_id, features) pairs for the TFDS writer (`tfds_dataset`).
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from data_pipelines.errors import skip_reason
from data_pipelines.strefer.config import EngineConfig
from data_pipelines.storage import LocalCopies, write_text
from stvl_jax.errors import InputError

NAMESPACE = "strefer"
DEAD = "dead"


def _count(name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)


def _dead(stage: str, element, err: Exception):
    """The dead-letter record of a failed element (input errors by their reason; anything else as
    `unexpected_error`, so one bad clip never stops a cluster job)."""
    reason = skip_reason(err) if isinstance(err, InputError) else "unexpected_error"
    _count(f"dead_{reason}")
    msg = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
    return beam.pvalue.TaggedOutput(DEAD, {"stage": stage, "element": element, "reason": reason, "message": msg})


class ClipVideo(beam.DoFn):
    """Stage 1: video path -> clips (`clip.video_clips`)."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg

    def setup(self):
        self.copies = LocalCopies(keep=1)

    def teardown(self):
        self.copies.close()

    def process(self, path: str):
        from data_pipelines.strefer.clip import video_clips

        _count("videos")
        try:
            clips, dropped = video_clips(path, self.cfg, local_path=self.copies.local(path))
        except Exception as e:  # noqa: BLE001 (dead-lettered with its reason)
            yield _dead("clip", path, e)
            return
        _count("clips", len(clips))
        _count("short_tails_dropped", dropped)
        yield from clips


class Annotate(beam.DoFn):
    """Stage 2: clip -> {clip, meta, frame_indices, frames}. Decodes the clip's `num_frames` sampled frames once
    (the annotator and the masklet generator both look at them)."""

    def __init__(self, cfg: EngineConfig, chat_factory=None):
        self.cfg, self.chat_factory = cfg, chat_factory

    def setup(self):
        from data_pipelines.strefer.annotators import make_annotator

        self.annotator = make_annotator(self.cfg.annotator, self.chat_factory)
        self.annotator.setup()
        self.copies = LocalCopies()

    def teardown(self):
        self.copies.close()

    def process(self, clip: dict):
        from data_pipelines.strefer.masklet_stage import sample_frame_indices
        from data_pipelines.video import decode_frames

        try:
            idx = sample_frame_indices(clip, self.cfg.num_frames)
            uniq, inv = np.unique(idx, return_inverse=True)
            frames = decode_frames(self.copies.local(clip["video"]), uniq)[inv]
            times = (idx - clip["start_frame"]) / clip["fps"]
            meta = self.annotator.annotate(clip, frames, times)
            if not meta["entities"]:
                from data_pipelines.errors import AnnotationError

                raise AnnotationError("no_entities", "the annotator found no active entity", clip["clip_id"])
        except Exception as e:  # noqa: BLE001
            yield _dead("annotate", clip, e)
            return
        yield {"clip": clip, "meta": meta, "frame_indices": idx, "frames": frames}


class TrackMasklets(beam.DoFn):
    """Stages 3/4: one masklet per entity (`masklet_stage`); entities left without one are dropped and counted,
    a clip left without any entity is dead-lettered."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg

    def setup(self):
        from data_pipelines.strefer.masklet_stage import make_masklet_source

        self.source = make_masklet_source(self.cfg)
        self.source.setup()

    def process(self, item: dict):
        clip, meta, idx, frames = item["clip"], item["meta"], item["frame_indices"], item["frames"]
        try:
            masklets, fails = self.source(clip, frames, idx, meta)
            for k, v in fails.items():
                _count(k, v)
            kept = [e for e in meta["entities"] if e["id"] in masklets["entities"]]
            _count("entities_without_masklet", len(meta["entities"]) - len(kept))
            if not kept:
                from data_pipelines.errors import AnnotationError

                raise AnnotationError("no_masklet", "no entity got a masklet", clip["clip_id"])
        except Exception as e:  # noqa: BLE001
            yield _dead("masklets", clip, e)
            return
        masklets.update(frame_indices=[int(i) for i in idx],
                        frame_times=[round(float(t), 6) for t in (idx - clip["start_frame"]) / clip["fps"]],
                        height=int(frames.shape[1]), width=int(frames.shape[2]))
        masklets["entities"] = {int(e["id"]): masklets["entities"][e["id"]] for e in kept}
        yield {"clip": clip, "meta": {**meta, "entities": kept}, "masklets": masklets}


class Synthesize(beam.DoFn):
    """Stage 5: -> (clip_id, TFDS features)."""

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg

    def process(self, item: dict):
        from data_pipelines.strefer.instructions import synthesize
        from data_pipelines.strefer.records import tfds_features

        clip = item["clip"]
        try:
            pairs = synthesize(clip, item["meta"], item["masklets"], num_time_tokens=self.cfg.num_time_tokens,
                               per_family=self.cfg.questions_per_family, seed=self.cfg.seed)
            if not pairs:
                from data_pipelines.errors import AnnotationError

                raise AnnotationError("no_instructions", "no template applies to this clip", clip["clip_id"])
        except Exception as e:  # noqa: BLE001
            yield _dead("instructions", clip, e)
            return
        _count("pairs", len(pairs))
        for p in pairs:
            _count(f"family_{p['family']}")
        yield clip["clip_id"], tfds_features(clip, item["meta"], item["masklets"], pairs)


def _write_lines(lines: list[str], path: str) -> None:
    """One file, sorted lines (a re-run writes the same bytes), local or remote (Beam's own text sink would need
    each store's Beam extra; the engine reaches every store through `data_pipelines.storage`)."""
    write_text(path, "".join(line + "\n" for line in sorted(lines)))


class StreferEngine(beam.PTransform):
    """PBegin -> PCollection of (clip_id, features); dead letters written to `dead_letter_path` (JSONL)."""

    def __init__(self, videos, cfg: EngineConfig, *, dead_letter_path: str | None = None, chat_factory=None):
        super().__init__()
        self.videos, self.cfg = sorted(videos), cfg
        self.dead_letter_path, self.chat_factory = dead_letter_path, chat_factory

    def expand(self, pbegin):
        cfg = self.cfg
        clips = (pbegin | "Videos" >> beam.Create(self.videos)
                 | "Clip" >> beam.ParDo(ClipVideo(cfg)).with_outputs(DEAD, main="main"))
        # Spread one video's clips over the workers (a DoFn's outputs otherwise stay on its worker).
        spread = clips.main | "Spread" >> beam.Reshuffle()
        annotated = spread | "Annotate" >> beam.ParDo(Annotate(cfg, self.chat_factory)).with_outputs(DEAD, main="main")
        tracked = annotated.main | "Masklets" >> beam.ParDo(TrackMasklets(cfg)).with_outputs(DEAD, main="main")
        examples = tracked.main | "Synthesize" >> beam.ParDo(Synthesize(cfg)).with_outputs(DEAD, main="main")
        if self.dead_letter_path:
            dead = ((clips[DEAD], annotated[DEAD], tracked[DEAD], examples[DEAD]) | "Dead" >> beam.Flatten())
            written = (dead | "DeadJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True, default=str))
                       | "DeadAll" >> beam.combiners.ToList()
                       | "DeadWrite" >> beam.Map(_write_lines, self.dead_letter_path))
            # The examples wait for the dead letters (a side input is complete before its consumer runs): a run
            # where every clip failed stops in the TFDS writer, and must leave the reasons behind.
            return examples.main | "AfterDeadLetters" >> beam.Map(lambda ex, _: ex, beam.pvalue.AsSingleton(written))
        return examples.main


def counters(result) -> dict[str, int]:
    """The engine's Beam counters of a finished pipeline, summed over steps -> {name: value}."""
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return dict(sorted(out.items()))
