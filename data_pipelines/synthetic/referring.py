"""Referring expressions of the synthetic set for referring video segmentation, by kind, from the ground truth.

Each expression picks exactly one entity of its video (the ones that would not are not generated):
  colour  "the red shape"                      colours are distinct within a video
  shape   "the circle"                         only when no other entity has that shape
  timing  "the square that enters last"        the latest first appearance among the squares (or among all:
          "the one that enters last"), after t = 0 and >= MIN_GAP s after every other candidate;
          "... that enters first"              the earliest, every candidate entering after t = 0 and the
                                               next one >= MIN_GAP s later;
          "... that stops moving"              the only candidate with a stop (standing still >= 1 s while fully
                                               in view: the ground truth's `stop` actions);
          "... that leaves and comes back"     the only candidate with an entry after an exit.
A timing expression names the shape only when another entity shares it (otherwise it says "the one"), so
the shape alone never decides a timing query.
"""

from __future__ import annotations

MIN_GAP = 0.5  # seconds between the first appearances a "first"/"last" expression tells apart
KINDS = ("colour", "shape", "timing")


def _timing_facts(gt: dict) -> dict[int, dict]:
    """Per entity id: first appearance (s, None if never), whether it stops, whether it comes back."""
    facts = {e["id"]: {"first": e["first_visible"], "stops": False, "returns": False} for e in gt["entities"]}
    exits: dict[int, float] = {}
    for a in sorted(gt["actions"], key=lambda a: a["start"]):
        f = facts.get(a["entity"])
        if f is None:
            continue
        if a["action"] == "stop":
            f["stops"] = True
        elif a["action"] == "exit":
            exits.setdefault(a["entity"], a["end"])
        # an entry after an exit, even one the video cuts short (entries' `occurrence` does not count an entity
        # that was in view from t = 0, so it cannot say this)
        elif a["action"] == "enter" and a["entity"] in exits and a["start"] >= exits[a["entity"]]:
            f["returns"] = True
    return facts


def _ordered_pick(cands: list[int], first: dict[int, float | None], last: bool) -> int | None:
    """The candidate entering last (or first) by a margin, every candidate entering after t = 0 for 'first' and
    the picked one entering after t = 0 for 'last'; None if there is no such candidate."""
    times = [(first[c], c) for c in cands]
    if any(t is None for t, _ in times):
        return None
    times.sort()
    (t_pick, pick), (t_next, _) = (times[-1], times[-2]) if last else (times[0], times[1])
    if abs(t_pick - t_next) < MIN_GAP:
        return None
    if (t_pick <= 0) if last else (times[0][0] <= 0):
        return None
    return pick


def rvos_expressions(gt: dict) -> list[dict]:
    """[{"entity": id, "exp": text, "kind": colour|shape|timing}] of a ground-truth document (videos with fewer
    than two entities get none: there is nothing to tell apart)."""
    ents = gt["entities"]
    if len(ents) < 2:
        return []
    out = []
    colours = [e["color"] for e in ents]
    shapes = [e["category"] for e in ents]
    for e in ents:
        if colours.count(e["color"]) == 1:
            out.append({"entity": e["id"], "exp": f"the {e['color']} shape", "kind": "colour"})
    for e in ents:
        if shapes.count(e["category"]) == 1:
            out.append({"entity": e["id"], "exp": f"the {e['category']}", "kind": "shape"})
    facts = _timing_facts(gt)
    first = {i: f["first"] for i, f in facts.items()}
    scopes = [("one", [e["id"] for e in ents])]
    scopes += [(s, [e["id"] for e in ents if e["category"] == s]) for s in sorted(set(shapes)) if shapes.count(s) > 1]
    for noun, cands in scopes:
        for phrase, last in (("enters last", True), ("enters first", False)):
            pick = _ordered_pick(cands, first, last)
            if pick is not None:
                out.append({"entity": pick, "exp": f"the {noun} that {phrase}", "kind": "timing"})
        for phrase, key in (("stops moving", "stops"), ("leaves and comes back", "returns")):
            hits = [c for c in cands if facts[c][key]]
            if len(hits) == 1:
                out.append({"entity": hits[0], "exp": f"the {noun} that {phrase}", "kind": "timing"})
    return out
