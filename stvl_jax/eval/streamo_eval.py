"""Streamo streaming evaluation: run the per-second loop over stream-format records (the model's own outputs
go back into its history, as in deployment) and score the state token of every second against the ground
truth: per-state P/R/F1, macro-F1, the majority baseline, the response-time error, and macro-F1/accuracy per
task type (the record's `task_type`, e.g. event_stop, count, narration)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from data_pipelines.errors import AnnotationError
from data_pipelines.formats.stream_record import stream_record_parts, stream_turn_indices
from data_pipelines.formats.streamo import STATE_TOKENS, STREAM_PLACEHOLDER
from data_pipelines.video import decode_clip
from stvl_jax.errors import InputError
from stvl_jax.eval.metrics import classification_report
from stvl_jax.eval.skips import SkipReport
from stvl_jax.infer.streamo import StreamoRunner, parse_state


def parse_stream_record(record: dict, source: str = "") -> dict:
    """-> {system, user_texts, gold_states, gold_outputs, question, video, n_stream}. AnnotationError naming
    `source` for a record training refuses (`stream_record_parts`) or one that cannot be scored turn by turn:
    one user turn per assistant turn, each user turn one `<stream>` frame, each assistant turn a state token."""
    video, messages, n_stream = stream_record_parts(record, source)
    system, users, golds = None, [], []
    for m in messages:
        if m["role"] == "system":
            system = m["content"]
        elif m["role"] == "user":
            users.append(m["content"].replace("\n" + STREAM_PLACEHOLDER, "").replace(STREAM_PLACEHOLDER, ""))
        elif m["role"] == "assistant":
            golds.append(m["content"])
    if len(users) != len(golds) or n_stream != len(users):
        raise AnnotationError("bad_field", f"stream record has {len(users)} user turns, {len(golds)} assistant "
                              f"turns and {n_stream} <stream> frames (evaluation needs one of each per second)",
                              source)
    states = [parse_state(g) for g in golds]
    if None in states:
        raise AnnotationError("bad_field", f"assistant turn {states.index(None)} "
                              f"({golds[states.index(None)][:40]!r}) starts with no state token", source)
    question = users[0].rsplit("\n", 1)[0] if "\n" in users[0] else None
    return dict(system=system, user_texts=users, gold_outputs=golds, gold_states=states, question=question,
                video=video, n_stream=n_stream)


def stream_frames(path: str, num_turns: int, fps: float = 1.0, source: str = "") -> np.ndarray:
    """The frames the training pipeline shows for each turn (`stream_turn_indices`: every int(video_fps / fps)-th
    frame); AnnotationError `time_out_of_range` when the video is too short for the turns, as in training."""
    return decode_clip(path, lambda info: stream_turn_indices(num_turns, info.num_frames, info.fps, fps,
                                                              source)).frames


def first_response(states) -> int | None:
    return next((i for i, s in enumerate(states) if s == STATE_TOKENS[2]), None)


def evaluate_streamo(model, tokenizer, vision, records: list[dict], media_root: str, *, max_rounds: int = 120,
                     max_answer_tokens: int = 24, stop_on_first_response: bool = False, fps: float = 1.0,
                     zero_pixels: bool = False, progress: bool = True, sources: Sequence[str] | None = None,
                     skips: SkipReport | None = None) -> dict:
    """Stream every record at `fps` through a `StreamoRunner` and score the state tokens against the gold turns.

    A record training would refuse (malformed, video unreadable or too short for its turns) or that cannot be
    scored is skipped and counted in `skips` (named by `sources[i]`, else its position) and listed under
    "skipped"; with `skips=None` it raises. `zero_pixels` replaces every frame by black (same frame count and
    size): a control run that shows how much of the score comes from the video rather than from the question
    and the protocol's timing.
    """
    gold_all, pred_all, per_record, timing = [], [], [], []
    by_task: dict[str, tuple[list, list]] = {}
    report = SkipReport() if skips is None else skips
    for i, rec in enumerate(tqdm(records, desc="streamo eval", unit="stream", disable=not progress)):
        source = sources[i] if sources is not None else f"record {i}"
        try:
            r = parse_stream_record(rec, source)
            path = r["video"] if os.path.isabs(r["video"]) else os.path.join(media_root, r["video"])
            frames = stream_frames(path, r["n_stream"], fps, source)
        except InputError as e:
            if skips is None:
                raise
            report.add_error(source, e)
            continue
        if zero_pixels:
            frames = np.zeros_like(frames)
        runner = StreamoRunner(model, tokenizer, vision, max_rounds=max_rounds, max_answer_tokens=max_answer_tokens,
                               system_prompt=r["system"], stop_on_first_response=stop_on_first_response)
        turns = runner.run(frames, r["user_texts"], question=r["question"])
        pred = [t.state for t in turns]
        gold = r["gold_states"][: len(pred)]
        gold_all += gold
        pred_all += pred
        task = by_task.setdefault(str(rec.get("task_type", "unknown")), ([], []))
        task[0].extend(gold)
        task[1].extend(pred)
        g_resp, p_resp = first_response(r["gold_states"]), first_response(pred)
        if g_resp is not None:
            timing.append(None if p_resp is None else p_resp - g_resp)
        per_record.append(dict(record=source, video=r["video"], question=r["question"], gold=r["gold_states"],
                               pred=pred, outputs=[t.output for t in turns],
                               latency_ms=float(1000 * np.median([t.latency_s for t in turns]))))
    metrics = classification_report(gold_all, pred_all, STATE_TOKENS)
    majority = Counter(gold_all).most_common(1)[0][0] if gold_all else STATE_TOKENS[0]
    baseline = classification_report(gold_all, [majority] * len(gold_all), STATE_TOKENS)
    hits = [d for d in timing if d is not None]
    metrics.update(
        baseline={"prediction": majority, "macro_f1": baseline["macro_f1"], "accuracy": baseline["accuracy"]},
        response_timing={"streams_with_response": len(timing), "responded": len(hits),
                         "mean_abs_error_s": float(np.mean(np.abs(hits))) if hits else None,
                         "within_1s": float(np.mean([abs(d) <= 1 for d in hits])) if hits else 0.0},
        median_turn_latency_ms=float(np.median([p["latency_ms"] for p in per_record])) if per_record else None,
        malformed_outputs=sum(p is None for p in pred_all),
        per_task={t: {k: v for k, v in classification_report(g, p, STATE_TOKENS).items()
                      if k in ("macro_f1", "accuracy", "n")} for t, (g, p) in sorted(by_task.items())},
    )
    return {"metrics": metrics, "streams": per_record, "skipped": report.as_dict()}


def format_per_task(metrics: dict) -> str:
    """One line: macro-F1 (seconds) per task type."""
    return "  ".join(f"{t} {v['macro_f1']:.3f} ({v['n']} s)" for t, v in metrics["per_task"].items())
