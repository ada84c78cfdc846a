"""Annotations in each seed system's format, derived from a per-video ground-truth document:
Streamo raw QA, STRIDE activation samples, QVHighlights records, referring masklets, caption chats.

Time conventions: ground truth is in continuous seconds. Streamo times use its 1-based interval convention
(time t = the turn <(t-1)s-ts>, which shows the frame at t-1 s), so an event [s, e] becomes
st_time = ceil(s) + 1, end_time = floor(e) + 1: the Standby turns are exactly the 1 fps frames at integer
seconds inside [s, e] and the Response turn is the first frame after the event.
"""

from __future__ import annotations

import math

import numpy as np

from data_pipelines.synthetic.vocabulary import (
    CAPTION_QUESTION, CAPTION_SENTENCE, EVENT_PHRASES, NUMBER_WORDS, STATE_QUERIES, STREAMO_COUNT_ANSWER,
    STREAMO_COUNT_QUESTION, STREAMO_EVENT_ANSWER, STREAMO_EVENT_QUESTION, STREAMO_NARRATION_QUESTION, STRIDE_QUERY,
    third_person,
)

EVENT_KINDS = ("enter", "exit", "stop", "bounce", "collide")


def _names(gt: dict) -> dict[int, str]:
    return {e["id"]: e["name"] for e in gt["entities"]}


def _phrase_key(a: dict) -> str:
    return "reenter" if a["action"] == "enter" and a.get("occurrence", 0) >= 1 else a["action"]


def _events(gt: dict) -> list[dict]:
    """Complete point/short events usable as questions."""
    return [a for a in gt["actions"] if a["action"] in EVENT_KINDS and not a.get("truncated")]


def _sentence(a: dict, names: dict[int, str]) -> str:
    s = EVENT_PHRASES[_phrase_key(a)][1]
    return s.format(other=names.get(a.get("other"), "other shape"))


def streamo_span(a: dict) -> tuple[int, int] | None:
    """Event [s, e] seconds -> Streamo (st_time, end_time), or None if no 1 fps frame falls inside it."""
    first, last = math.ceil(a["start"] - 1e-9), math.floor(a["end"] + 1e-9)
    return (first + 1, last + 1) if first <= last else None


def streamo_raw(gt: dict, rng: np.random.Generator) -> list[dict]:
    """Streamo raw QA records: per (entity, event phrase) all occurrences; one counting question; one narration."""
    names, n_sec = _names(gt), int(gt["duration"])
    base = {"video_name": gt["vid"] + ".mp4", "video_path": gt["video"], "source": "stvl-synth"}
    out = []
    groups: dict[tuple[int, str], list[dict]] = {}
    for a in _events(gt):
        span = streamo_span(a)
        # The Response turn (frame end_time) must exist.
        if span and span[1] < n_sec:
            groups.setdefault((a["entity"], _phrase_key(a)), []).append({**a, "span": span})
    for (ent, key), occ in sorted(groups.items()):
        ref = names[ent]
        first_frame = occ[0]["span"][0] - 1
        q_frame = int(rng.integers(0, first_frame + 1))
        responses = [{"content": STREAMO_EVENT_ANSWER.format(ref=ref, sentence=_sentence(a, names)),
                      "st_time": a["span"][0], "end_time": a["span"][1], "time": "",
                      "event_start": a["start"], "event_end": a["end"]} for a in occ]
        question = STREAMO_EVENT_QUESTION.format(ref=ref, verb=third_person(EVENT_PHRASES[key][0]))
        out.append({**base, "task_type": f"event_{key}", "entity": ent,
                    "question": [{"content": question, "time": str(q_frame + 1)}],
                    "response": responses})
    count = _count_question(gt, rng)
    if count:
        out.append({**base, "task_type": "count", **count})
    narr = [a for a in _events(gt) if a["action"] in ("enter", "exit")]
    narr = [(a, streamo_span(a)) for a in narr]
    narr = [(a, s) for a, s in narr if s and s[1] < n_sec]
    if narr:
        out.append({**base, "task_type": "narration",
                    "question": [{"content": STREAMO_NARRATION_QUESTION, "time": "0"}],
                    "response": [{"content": STREAMO_EVENT_ANSWER.format(ref=names[a["entity"]],
                                                                         sentence=_sentence(a, names)),
                                  "st_time": s[0], "end_time": s[1], "time": "", "event_start": a["start"],
                                  "event_end": a["end"]} for a, s in narr]})
    return out


def _count_question(gt: dict, rng) -> dict | None:
    """'How many shapes...' at an integer second where every entity is clearly in or out of view."""
    fps = gt["fps"]
    good = []
    for sec in range(int(gt["duration"])):
        objs = gt["frames"][sec * fps]["objects"]
        if all(o["visible_fraction"] >= 0.6 or o["area"] < 1 for o in objs):
            partial_edge = any(o["box"][0] == 0 or o["box"][0] + o["box"][2] >= gt["width"] for o in objs)
            if not partial_edge:
                good.append((sec, len(objs)))
    if not good:
        return None
    sec, n = good[int(rng.integers(len(good)))]
    answer = STREAMO_COUNT_ANSWER.format(n=NUMBER_WORDS[n], noun="shape" if n == 1 else "shapes")
    return {"question": [{"content": STREAMO_COUNT_QUESTION, "time": str(sec + 1)}],
            "response": [{"content": answer, "time": str(sec + 1)}]}


def stride_samples(gt: dict, rng: np.random.Generator, min_clip: float = 1.0, min_event: float = 2.0,
                   max_frames: int = 16) -> list[dict]:
    """STRIDE activation samples (temporal grounding): per unambiguous event of at least `min_event` seconds,
    clips cut before / inside / after it; target entry [s, e] <active> maskable, optional clean <inactive>
    prefix.

    Why `min_event` (default 2 s = two of STRIDE's 1-s slots): a span predicted on the slot grid has integer
    boundaries, so a 1-s event (bounce/collide are contact +- 0.5 s) covers two slots and even a perfect slot
    prediction scores tIoU <= 0.5 against it; events >= 2 s stay resolvable (tIoU >= 2/3 unless a boundary
    falls exactly on a slot edge), as the seconds-to-minutes events of STRIDE's real grounding data are.

    Clip bounds are chosen so that the STRIDE pipeline's frames (an even count n spread evenly over the clip)
    land exactly 1 s apart on source frames, as the 1-FPS stream shows them at inference: the start is a source
    frame time and the clip lasts n - 1 s plus one source frame (`whole_second_clip_end`). Otherwise the spacing
    jitters between 1 and 3 s with the clip length, and a model must read the decimal timestamps to align
    slots with frames — which a tiny model trained for minutes does not learn."""
    names = _names(gt)
    counts: dict[tuple[int, str], int] = {}
    for a in _events(gt):
        counts[(a["entity"], _phrase_key(a))] = counts.get((a["entity"], _phrase_key(a)), 0) + 1
    out = []
    for a in _events(gt):
        key = _phrase_key(a)
        if counts[(a["entity"], key)] != 1:
            continue  # ambiguous query (e.g. several bounces)
        if a["end"] - a["start"] < min_event:
            continue  # shorter than the slot grid resolves (see above)
        query = STRIDE_QUERY.format(ref=names[a["entity"]], verb=EVENT_PHRASES[key][0])
        out += event_clip_samples(gt, query, a["start"], a["end"], rng, {"action": key, "entity": a["entity"]},
                                  min_clip=min_clip, max_frames=max_frames)
    return out


def event_clip_samples(gt: dict, query: str, s: float, e: float, rng: np.random.Generator, fields: dict, *,
                       min_clip: float = 1.0, max_frames: int = 16) -> list[dict]:
    """STRIDE samples of one event [s, e] of video `gt` (its vid, video, fps, duration, height, width): clips cut
    before / inside / after it (`stride_samples` explains the bounds); `fields` (action, entity, ...) go into
    each record and name its id."""
    dur, fps = float(gt["duration"]), float(gt["fps"])
    tag = "_".join(str(fields[k]) for k in ("entity", "action"))
    out = []
    for cut in ("before", "inside", "after"):
        v_start = math.floor(float(rng.uniform(0, max(0.0, s - 2.0))) * fps) / fps
        lo, hi = {"before": (v_start + min_clip, s - 0.25), "inside": (max(s + 0.5, v_start + min_clip), e),
                  "after": (max(e + 0.5, v_start + min_clip), dur)}[cut]
        v_end = whole_second_clip_end(v_start, lo, min(hi, dur), fps, max_frames, rng)
        if v_end is None:
            continue
        entries = [{"start_seconds": s, "end_seconds": e, "mask": True, "value": "<active>"}]
        if rng.random() < 0.5 and v_start + 0.5 < s - 1.0 < v_end - 2.0:  # keep >= 1 maskable slot
            entries.append({"start_seconds": v_start, "end_seconds": round(s - 1.0, 2), "mask": False,
                            "value": "<inactive>"})
        out.append({"id": f"{gt['vid']}_{tag}_{cut}", "vid": gt["vid"], "task": "tvg", **fields, "cut": cut,
                    "data": [
                        {"type": "text", "content": query},
                        {"type": "video", "path": gt["video"], "fps": gt["fps"], "start_seconds": v_start,
                         "end_seconds": v_end, "src_resolution": [gt["height"], gt["width"]]},
                        {"type": "activation_output", "entries": entries}]})
    return out


def whole_second_clip_end(v_start: float, lo: float, hi: float, fps: float, max_frames: int,
                          rng: np.random.Generator) -> float | None:
    """A clip end in [lo, hi] of the form v_start + (n - 1) + 1/fps, n even in [2, max_frames] (drawn uniformly
    among those that fit), or None: n frames spread evenly from v_start to the last source frame before it are
    then exactly 1 s apart."""
    ends = [v_start + n - 1 + 1.0 / fps for n in range(2, max_frames + 1, 2)]
    ok = [x for x in ends if lo <= x <= hi]
    return round(ok[int(rng.integers(len(ok)))], 4) if ok else None


def qvh_records(gt: dict, first_qid: int) -> list[dict]:
    """QVHighlights-format records for durative states (windows >= 1 s), 2 s clips for clip ids/saliency."""
    names, dur = _names(gt), float(gt["duration"])
    out, qid = [], first_qid
    for ent in gt["entities"]:
        for kind, template in STATE_QUERIES.items():
            wins = [[a["start"], a["end"]] for a in gt["actions"]
                    if a["entity"] == ent["id"] and a["action"] == kind and a["end"] - a["start"] >= 1.0
                    and not a.get("truncated")]
            if not wins:
                continue
            clips, scores = [], []
            for c in range(int(math.ceil(dur / 2))):
                ov = sum(max(0.0, min(e, 2 * c + 2) - max(s, 2 * c)) for s, e in wins)
                if ov > 0:
                    clips.append(c)
                    scores.append([max(1, min(4, round(4 * ov / 2)))] * 3)
            out.append({"qid": qid, "query": template.format(ref=names[ent["id"]]), "duration": dur,
                        "vid": gt["vid"], "video": gt["video"], "relevant_windows": wins,
                        "relevant_clip_ids": clips, "saliency_scores": scores})
            qid += 1
    return out


def masklets(gt: dict, n_frames: int = 32) -> list[dict]:
    """Referring masklets (Strefer-style): per expression, masks on n_frames uniformly sampled frames."""
    idx = np.linspace(0, gt["num_frames"] - 1, min(n_frames, gt["num_frames"])).round().astype(int).tolist()
    cat = {e["id"]: e["category"] for e in gt["entities"]}
    out = []
    for r in gt["referring_expressions"]:
        masks, boxes = [], []
        for k in idx:
            obj = next((o for o in gt["frames"][k]["objects"] if o["entity"] == r["entity"]), None)
            masks.append(obj["rle"] if obj else None)
            boxes.append(obj["box"] if obj else None)
        out.append({"vid": gt["vid"], "video": gt["video"], "expression": r["expression"], "kind": r["kind"],
                    "entity": r["entity"], "category": cat[r["entity"]], "generalized_noun": "shape",
                    "frame_indices": idx, "frame_times": [round(k / gt["fps"], 4) for k in idx],
                    "masks": masks, "boxes": boxes})
    return out


def caption_chat(gt: dict, max_sentences: int = 8, fps: float = 2.0) -> dict:
    """Chat sample: video + 'Describe what happens' -> chronological event sentences."""
    names = _names(gt)
    sents = [CAPTION_SENTENCE.format(t=a["start"], ref=names[a["entity"]], sentence=_sentence(a, names))
             for a in _events(gt)[:max_sentences]]
    answer = " ".join(sents) if sents else "Nothing enters or leaves the scene."
    return {"id": gt["vid"] + "_caption", "vid": gt["vid"], "messages": [
        {"role": "user", "content": [{"type": "video", "path": gt["video"], "fps": fps},
                                     {"type": "text", "text": CAPTION_QUESTION}]},
        {"role": "assistant", "content": answer}]}
