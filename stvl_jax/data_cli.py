"""`stvl data ...`: make the synthetic set, convert annotation formats, inspect/check data.

    stvl data synth --out DIR [--videos N] [--seed S] [--workers W] [--preset vos] [--export rvos]
    stvl data tokenizer --out DIR [--base DIR] [--time-tokens N]   (N: Strefer's <k> tokens added)
    stvl data streamo --input raw.json --out stream.jsonl [--fps 1] [--video-root DIR] [--system-prompt TEXT]
                      [--refuse-past-end] [--default-question [TEXT]] [--strict]
    stvl data stride --input samples.jsonl --out windows.jsonl [--window 16] [--modes 1 2 3] [--seed S]
    stvl data qvh-yesno --input qvh.jsonl --out yesno.jsonl [--seed S] [--margin 0.5]
    stvl data qvh-yesno-score --samples yesno.jsonl --predictions preds.jsonl [--strict]
    stvl data inspect PATH [--check]     (a video, or a JSONL index: record/skip counts)
    stvl data to-arrayrecord --input x.jsonl --out x.array_record [--strict]
    stvl data strefer --videos DIR --out DIR [--annotator synthetic|stvl|openai] [--runner R] [beam options]
                      (the Strefer data engine on Apache Beam -> a TFDS dataset; docs/strefer.md)
Bad records are skipped with per-reason counts printed at the end; --strict stops at the first with one line
naming the file:line (or file[index]) and the reason. No target or question is filled in with a default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

from data_pipelines.errors import AnnotationError
from stvl_jax.cli_args import non_negative_float, output_dir, positive_float, positive_int
from stvl_jax.errors import InputError


def _read_records(path: str):
    """Yield (source, record-or-error): a `.json` file is one JSON document (a list of records, or one record
    object; JSON Lines under a .json name are read as lines), anything else JSON Lines; a malformed line yields
    an AnnotationError."""
    if not os.path.isfile(path):
        raise AnnotationError("missing_file", f"input file not found: {path}")
    if path.endswith(".json"):
        data = _read_json_document(path)
        if data is not None:
            records = data if isinstance(data, list) else [data]
            for i, rec in enumerate(records):
                yield (f"{path}[{i}]" if isinstance(data, list) else path), rec
            return
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            src = f"{path}:{lineno}"
            try:
                yield src, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                yield src, AnnotationError("bad_json", "malformed JSON line", src)


def _read_json_document(path: str):
    """The file's JSON value (a list or an object); None for JSON Lines (objects, one a line) under a .json name."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise AnnotationError("bad_json", "not UTF-8 text", path) from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and raw.lstrip()[:1] == b"{":
            return None
        raise AnnotationError("bad_json", f"malformed JSON ({e.msg}, line {e.lineno} column {e.colno})",
                              path) from None
    if not isinstance(data, (list, dict)):
        raise AnnotationError("bad_json", f"a .json input holds a list of records or one record object, "
                              f"not a {type(data).__name__}", path)
    return data


class _Run:
    """Counts processed / skipped records per reason, and items dropped from kept records; strict mode re-raises
    a record's error."""

    def __init__(self, strict: bool):
        self.strict, self.ok, self.skipped, self.first = strict, 0, Counter(), {}
        self.dropped, self.first_dropped = Counter(), {}

    def drop(self, note: AnnotationError) -> None:
        """An item a converter left out of a record it kept (e.g. a Streamo answer past the video's end)."""
        self.dropped[note.reason] += 1
        self.first_dropped.setdefault(note.reason, str(note))

    def skip(self, err: Exception, source: str) -> None:
        reason = getattr(err, "reason", type(err).__name__)
        reason = {"file not found": "missing_file"}.get(reason, reason)
        if getattr(err, "path", None):
            reason = "missing_file" if "not found" in str(err) else "bad_video"
        if self.strict:  # one line naming the record (a video error names only the video)
            if source and source not in str(err):
                raise AnnotationError(reason, str(err), source) from None
            raise err
        self.skipped[reason] += 1
        self.first.setdefault(reason, str(err) if source in str(err) else f"{source}: {err}")

    def report(self, what: str, verb: str = "wrote") -> None:
        print(f"{what}: {verb} {self.ok}, skipped {sum(self.skipped.values())}", file=sys.stderr)
        for reason, n in sorted(self.skipped.items()):
            print(f"  {reason}: {n}  (first: {self.first[reason]})", file=sys.stderr)
        for reason, n in sorted(self.dropped.items()):
            print(f"  dropped from kept records: {reason}: {n}  (first: {self.first_dropped[reason]})",
                  file=sys.stderr)


def _checked(records, run: _Run, check):
    """Yield check(index, source, record) over (source, record) pairs; a bad record (an AnnotationError or a
    VideoDecodeError from `check`, or a line that did not parse) is counted in `run` (or raised when strict)."""
    from data_pipelines.errors import VideoDecodeError

    for i, (src, rec) in enumerate(records):
        try:
            if isinstance(rec, Exception):
                raise rec
            value = check(i, src, rec)
        except (AnnotationError, VideoDecodeError) as e:
            run.skip(e, src)
            continue
        run.ok += 1
        yield value


def _convert_each(a, desc: str, convert, run: _Run | None = None) -> int:
    """Run convert(index, source, record) -> list of rows over the input; skip/count bad records; write."""
    run = run or _Run(a.strict)
    rows = [row for out in _checked(_progress(list(_read_records(a.input)), desc), run, convert) for row in out]
    run.report(desc)
    if run.ok == 0:  # nothing usable is a failed conversion, not an empty output
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(run.skipped.items())) or "the input holds no record"
        raise InputError(f"{a.input!r}: no usable record ({reasons}); nothing written")
    _write(a.out, rows)
    return 0


def _progress(it, desc: str):
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="rec", file=sys.stderr)


def _write(out: str, rows: list) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        if out.endswith(".json"):
            json.dump(rows, f, indent=1)
        else:
            for r in rows:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")


def cmd_synth(a) -> int:
    from data_pipelines.synthetic import SynthConfig, generate_dataset
    from data_pipelines.vos import vos_synth_config

    cfg = (vos_synth_config(a.videos, a.seed) if a.preset == "vos" else
           SynthConfig(num_videos=a.videos, seed=a.seed))
    if a.multishot and a.multishot > a.videos:
        raise InputError(f"--multishot {a.multishot} joins more scenes than --videos {a.videos}")
    m = generate_dataset(a.out, cfg, workers=a.workers, progress=True)
    counts = dict(m["counts"])
    if a.export == "rvos":
        from data_pipelines.synthetic.rvos_export import export_rvos

        counts.update({f"rvos/{k}": n for k, n in export_rvos(a.out, progress=True).items()})
    if a.multishot:
        from data_pipelines.synthetic.multishot import write_multishot

        m["multishot"] = write_multishot(a.out, cfg, range(a.multishot))["vid"]
    print(json.dumps({"out": a.out, "splits": {k: len(v) for k, v in m["splits"].items()}, "counts": counts,
                      **({"multishot": m["multishot"]} if a.multishot else {})}))
    return 0


def cmd_tokenizer(a) -> int:
    """The tiny tokenizer (or `--base`), with Strefer's `<k>` time tokens added when `--time-tokens N`."""
    from data_pipelines.tokenizer import TINY_TOKEN_IDS, build_tiny_tokenizer, open_tokenizer

    if a.base is None and a.time_tokens is None:
        build_tiny_tokenizer(a.out)
        print(json.dumps({"out": a.out, "special_token_ids": TINY_TOKEN_IDS}))
        return 0
    if a.base is not None and os.path.abspath(a.base) == os.path.abspath(a.out):
        raise InputError(f"--out {a.out!r} is the --base tokenizer itself; write the extended one elsewhere")
    tok = open_tokenizer(a.base or build_tiny_tokenizer(a.out), "--base")
    info = {"out": a.out, "base": a.base or "tiny"}
    if a.time_tokens is not None:
        from data_pipelines.strefer.time_tokens import add_time_tokens

        info["time_token_ids"] = list(add_time_tokens(tok, a.time_tokens))  # first, last
    tok.save_pretrained(a.out)
    print(json.dumps({**info, "vocab_size": len(tok)}))
    return 0


_REFERENCE_QUESTION = object()  # `--default-question` given without a text: the reference converter's


def cmd_streamo(a) -> int:
    from data_pipelines.formats.streamo import DEFAULT_QUESTION, convert_record

    root = a.video_root or os.path.dirname(os.path.abspath(a.input))
    run = _Run(a.strict)
    question = DEFAULT_QUESTION if a.default_question is _REFERENCE_QUESTION else a.default_question

    def convert(i, src, rec):
        dropped = []  # counted only once the record is kept
        out = convert_record(rec, video_root=root, fps=a.fps, system_prompt=a.system_prompt, source=src,
                             past_end="refuse" if a.refuse_past_end else "drop", dropped=dropped,
                             default_question=question)
        for note in dropped:
            run.drop(note)
        return [out]

    return _convert_each(a, "streamo to-stream", convert, run)


def cmd_stride(a) -> int:
    import numpy as np

    from data_pipelines.formats import stride as S
    from data_pipelines.video import probe_video, sample_indices

    cfg = S.StrideWindowConfig(window=a.window, resolution=a.resolution, mask_modes=tuple(a.modes),
                               single_sequence=a.single_sequence)
    root = a.video_root or os.path.dirname(os.path.abspath(a.input))

    def convert(i, src, rec):
        query, v, entries = S.parse_sample(rec, src)
        path = v["path"] if os.path.isabs(v["path"]) else os.path.join(root, v["path"])
        info = probe_video(path)
        s, e = float(v["start_seconds"]), float(v["end_seconds"])
        if e > info.duration + 1e-6:
            raise AnnotationError("time_out_of_range", f"clip end {e} > duration {info.duration:.2f}", src)
        idx = sample_indices(info, start=s, end=e, num_frames=S.clip_frame_count(e - s, a.fps))
        times = idx / info.fps
        t0 = float(times[0])
        entries = [S.ActivationEntry(x.start - t0, x.end - t0, x.value, x.mask) for x in entries]
        w = S.build_window(entries, float(times[-1] - t0), cfg, np.random.default_rng([a.seed, i]), src)
        return [{"id": rec.get("id", src) if isinstance(rec, dict) else src, "query": query,
                 "frame_times": [round(float(t - t0), 4) for t in times],
                 "slot_starts": w.starts.round(4).tolist(), "gt": w.gt.tolist(),
                 "unseen": w.unseen.tolist(), "fixed": w.fixed.tolist(), "mask": w.mask.tolist(),
                 "mode": w.mode, "budget": w.budget, "activation": S.activation_text(w, cfg)}]

    return _convert_each(a, "stride windows", convert)


def cmd_qvh_yesno(a) -> int:
    import numpy as np

    from data_pipelines.formats.qvhighlights import to_yesno

    rng = np.random.default_rng(a.seed)
    return _convert_each(a, "qvh yes/no", lambda i, src, rec: to_yesno(rec, rng, margin=a.margin, source=src))


def cmd_qvh_score(a) -> int:
    from data_pipelines.formats.qvhighlights import parse_yesno_prediction, validate_yesno_sample, yesno_accuracy

    ids, pred_ids = set(), set()

    def unique(seen: set, rid, src: str, what: str) -> None:
        if rid in seen:
            raise AnnotationError("duplicate_id", f"{what} id {rid!r} seen before (the first one is used)", src)
        seen.add(rid)

    def sample(i, src, rec):
        validate_yesno_sample(rec, src)
        unique(ids, rec["id"], src, "sample")
        return rec

    def prediction(i, src, rec):
        rid, text = parse_yesno_prediction(rec, src)
        if rid not in ids:
            raise AnnotationError("unknown_id", f"prediction id {rid!r} is no sample's", src)
        unique(pred_ids, rid, src, "prediction")
        return rid, text

    sample_run, pred_run = _Run(a.strict), _Run(a.strict)
    samples = list(_checked(_read_records(a.samples), sample_run, sample))
    preds = dict(_checked(_read_records(a.predictions), pred_run, prediction))
    sample_run.report(f"qvh-yesno-score samples ({a.samples})", verb="read")
    pred_run.report(f"qvh-yesno-score predictions ({a.predictions})", verb="read")
    metrics = yesno_accuracy(samples, preds)
    metrics["skipped_samples"] = dict(sample_run.skipped)
    metrics["skipped_predictions"] = dict(pred_run.skipped)
    print(json.dumps(metrics))
    return 0


def cmd_inspect(a) -> int:
    from data_pipelines.video import check_video_isolated, probe_video

    p = a.path
    if p.endswith((".jsonl", ".json")):
        n, bad = 0, Counter()
        for _, rec in _read_records(p):
            n += 1
            if isinstance(rec, Exception):
                bad[rec.reason] += 1
            elif not isinstance(rec, (dict, list)):  # a record of every format is an object (STRIDE: or a list)
                bad["bad_record"] += 1
        print(json.dumps({"records": n, "malformed": dict(bad)}))
        return 0
    info = check_video_isolated(p) if a.check else probe_video(p)
    print(json.dumps({"path": info.path, "frames": info.num_frames, "fps": info.fps, "width": info.width,
                      "height": info.height, "duration": round(info.duration, 3), "checked": bool(a.check)}))
    return 0


def _index_record(i: int, src: str, rec) -> bytes:
    """A record for an index: a JSON object (STRIDE samples: or a list), re-serialized on one line."""
    if not isinstance(rec, (dict, list)):
        raise AnnotationError("bad_record", f"an index record is a JSON object (or a STRIDE list), got a "
                              f"{type(rec).__name__}", src)
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()


def cmd_to_arrayrecord(a) -> int:
    from data_pipelines.grain.sources import write_array_record

    run = _Run(a.strict)
    payloads = list(_checked(_read_records(a.input), run, _index_record))  # all checked before writing
    write_array_record(a.out, payloads)
    run.report("to-arrayrecord")
    print(json.dumps({"out": a.out, "records": len(payloads), "skipped": dict(run.skipped)}))
    return 0


def cmd_strefer(a) -> int:
    """The Strefer engine (data_pipelines.strefer); the `stvl` annotator's model chat is built here (JAX side)."""
    from data_pipelines.strefer.cli import beam_args, engine_config
    from data_pipelines.strefer.run import plot_families, print_summary, run_engine

    cfg = engine_config(a)
    chat_factory = None
    if cfg.annotator.name == "stvl":
        from stvl_jax.infer.strefer_chat import StvlChatFactory

        chat_factory = StvlChatFactory(cfg.annotator.checkpoint, cfg.annotator.tokenizer, cfg.annotator.max_new_tokens)
    summary = run_engine(a.videos, a.out, cfg, runner=a.runner, beam_args=beam_args(a.beam_args),
                         chat_factory=chat_factory, overwrite=a.overwrite, dead_letter_path=a.dead_letter)
    print_summary(summary)
    if a.plot:
        print(f"family plot: {plot_families(summary['counters'], a.plot)}")
    return 0


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stvl data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write the synthetic space-time video set")
    s.add_argument("--out", type=output_dir, required=True)
    s.add_argument("--videos", type=positive_int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=positive_int, default=None)
    s.add_argument("--preset", choices=("default", "vos"), default="default",
                   help="vos: entities also leave and come back (SAM2 / VOS training and eval; docs/data.md)")
    s.add_argument("--export", choices=("rvos",), default=None,
                   help="rvos: also write the set in MeViS's referring-segmentation layout under OUT/rvos "
                        "(colour / shape / timing expressions; docs/virst.md)")
    s.add_argument("--multishot", type=positive_int, default=None, metavar="K",
                   help="also write videos/multishot_*.mp4 joining scenes 0..K-1 with hard cuts (recorded in its "
                        "annotation; shot-detection tests, `stvl data strefer`)")
    s.set_defaults(fn=cmd_synth)
    s = sub.add_parser("tokenizer", help="build the tiny Qwen-style tokenizer (or add Strefer's <k> tokens)")
    s.add_argument("--out", type=output_dir, required=True)
    s.add_argument("--base", default=None, help="extend this tokenizer directory instead of building the tiny one")
    s.add_argument("--time-tokens", type=positive_int, default=None, metavar="N",
                   help="add Strefer's time tokens <0>..<N-1> (plain added tokens; train with model.vocab_size set "
                        "to the printed vocab_size)")
    s.set_defaults(fn=cmd_tokenizer)
    s = sub.add_parser("streamo", help="Streamo raw QA -> stream format (to-stream)")
    s.add_argument("--input", required=True)
    s.add_argument("--out", required=True, help=".json (list) or .jsonl")
    s.add_argument("--fps", type=positive_float, default=1.0)
    s.add_argument("--video-root", default=None, help="base of relative video paths (default: input's folder)")
    s.add_argument("--system-prompt", default=None,
                   help="system message of every stream (default: Streamo's own prompt, verbatim)")
    s.add_argument("--refuse-past-end", action="store_true",
                   help="skip a record with a question or response time past the video's end (default: keep "
                        "it, drop that question or answer as Streamo's converter does, and count it)")
    s.add_argument("--default-question", nargs="?", const=_REFERENCE_QUESTION, default=None, type=_nonempty,
                   metavar="TEXT", help="open the stream of a record without any question with TEXT (alone: the "
                   "reference converter's generic question); default: such a record is skipped (missing_question)")
    s.add_argument("--strict", action="store_true")
    s.set_defaults(fn=cmd_streamo)
    s = sub.add_parser("stride", help="build STRIDE activation windows (slot GT, categories, masks)")
    s.add_argument("--input", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--window", type=positive_int, default=16)
    s.add_argument("--resolution", type=positive_float, default=1.0)
    s.add_argument("--fps", type=positive_float, default=1.0)
    s.add_argument("--modes", type=int, choices=(0, 1, 2, 3), nargs="+", default=[1, 2, 3])
    s.add_argument("--single-sequence", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--video-root", default=None)
    s.add_argument("--strict", action="store_true")
    s.set_defaults(fn=cmd_stride)
    s = sub.add_parser("qvh-yesno", help="QVHighlights -> balanced timestamp Yes/No questions")
    s.add_argument("--input", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--margin", type=non_negative_float, default=0.5)
    s.add_argument("--strict", action="store_true")
    s.set_defaults(fn=cmd_qvh_yesno)
    s = sub.add_parser("qvh-yesno-score", help="accuracy of Yes/No predictions ({id, prediction} JSONL)")
    s.add_argument("--samples", required=True)
    s.add_argument("--predictions", required=True)
    s.add_argument("--strict", action="store_true")
    s.set_defaults(fn=cmd_qvh_score)
    s = sub.add_parser("inspect", help="probe a video (--check: full decode in a child process) or count an index")
    s.add_argument("path")
    s.add_argument("--check", action="store_true")
    s.set_defaults(fn=cmd_inspect)
    s = sub.add_parser("to-arrayrecord", help="copy a JSONL index into an ArrayRecord file (bad lines skipped)")
    s.add_argument("--input", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--strict", action="store_true")
    s.set_defaults(fn=cmd_to_arrayrecord)
    s = sub.add_parser("strefer", help="Strefer data engine on Apache Beam: videos -> instructions (TFDS dataset)")
    from data_pipelines.strefer.cli import add_arguments

    add_arguments(s)
    s.set_defaults(fn=cmd_strefer)
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    if argv[:1] == ["strefer"]:  # the options argparse does not know are Beam pipeline options
        args, extra = parser.parse_known_args(argv)
        args.beam_args = extra
    else:
        args = parser.parse_args(argv)
    return int(args.fn(args) or 0)
