"""Stage 5: metadata + masklets of one clip -> instruction-response pairs, in template families.

Timestamps are Strefer's temporal tokens: second s of a clip lasting D seconds is "<k>", k = round((N - 1) * s / D)
(N = `num_time_tokens`, 32 in BLIP-3-Strefer). A question that names a time names a token, and its answer is
true at that token's own time k * D / (N - 1). Masklet-referred questions write "<region>" where the model gets
the entity's masklet; every pair lists the entity ids of its regions in order, and the masklet frames it refers
to (positions in the clip's sampled frames).

Families (docs/strefer.md): region_action, region_location, temporal_grounding, counting, ordering,
appearance_reentry, timestamp_yesno. Each pair: {"family", "template", "question", "answer", "entities",
"regions", "frames"}. Choices are drawn from a generator seeded by (seed, clip id): re-runs are identical.
"""

from __future__ import annotations

import zlib

import numpy as np
from data_pipelines.rle import coco_rle_decode

FAMILIES = ("region_action", "region_location", "temporal_grounding", "counting", "ordering",
            "appearance_reentry", "timestamp_yesno")

# Synthetic action keys -> (question verb phrase, answer verb phrase); a model's free-text action is used as is.
ACTION_PHRASES = {
    "move_left": ("move to the left", "moves to the left"),
    "move_right": ("move to the right", "moves to the right"),
    "stop": ("stand still", "stands still"),
    "enter": ("enter the scene", "enters the scene"),
    "exit": ("leave the scene", "leaves the scene"),
    "bounce": ("bounce off the wall", "bounces off the wall"),
    "collide": ("bump into another shape", "bumps into another shape"),
    "occluded": ("get partly hidden", "is partly hidden"),
}
STATE_PHRASES = {"move_left": "moving to the left", "move_right": "moving to the right", "stop": "standing still",
                 "occluded": "partly hidden", "enter": "entering the scene", "exit": "leaving the scene"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
YESNO_MARGIN_S = 0.25  # a Yes/No question's time stays this far from the span's edges (label noise otherwise)


def time_token(sec: float, duration: float, n: int) -> int:
    """Strefer's seconds_to_timetoken: k = round((N - 1) * sec / duration), clamped to [0, N - 1]."""
    return int(min(n - 1, max(0, round((n - 1) * sec / duration))))


def token_time(k: int, duration: float, n: int) -> float:
    return k * duration / (n - 1)


def location_words(box_xywh, height: int, width: int) -> str:
    """The 3 x 3 cell of a box centre: 'top left' ... 'center' ... 'bottom right'."""
    x, y, w, h = box_xywh
    cx, cy = (x + w / 2) / width, (y + h / 2) / height
    row = ("top", "middle", "bottom")[min(2, int(cy * 3))]
    col = ("left", "center", "right")[min(2, int(cx * 3))]
    return "center" if (row, col) == ("middle", "center") else f"{row} {col}"


def _plural(noun: str) -> str:
    return {"person": "people", "child": "children", "man": "men", "woman": "women"}.get(
        noun, noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s"))


def _count(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


class Synthesizer:
    """One clip's pairs. `masklets`: {"frame_times": (T,) s from the clip start, "entities": {id: [RLE|None]}}."""

    def __init__(self, clip: dict, meta: dict, masklets: dict, *, num_time_tokens: int, per_family: int, seed: int):
        self.clip, self.meta, self.m = clip, meta, masklets
        self.n, self.per = num_time_tokens, per_family
        self.duration = float(clip["end"] - clip["start"])
        self.rng = np.random.default_rng([seed, zlib.crc32(clip["clip_id"].encode())])
        self.entities = {e["id"]: e for e in meta["entities"]}
        self.present = {int(k): [r is not None and _area(r) > 0 for r in v] for k, v in masklets["entities"].items()}
        self.times = [float(t) for t in masklets["frame_times"]]

    def tok(self, sec: float) -> str:
        return f"<{time_token(sec, self.duration, self.n)}>"

    def _pick(self, items: list, k: int | None = None) -> list:
        k = self.per if k is None else k
        if len(items) <= k:
            return list(items)
        return [items[i] for i in sorted(self.rng.choice(len(items), size=k, replace=False))]

    @staticmethod
    def _pair(family, template, q, a, entities, regions=(), frames=()) -> dict:
        return {"family": family, "template": template, "question": q, "answer": a, "entities": list(entities),
                "regions": list(regions), "frames": [int(f) for f in frames]}

    def tracked(self) -> list[int]:
        return [e for e in self.entities if any(self.present.get(e, []))]

    def _frames_of(self, eid: int) -> list[int]:
        return [i for i, p in enumerate(self.present.get(eid, [])) if p]

    # ---- families --------------------------------------------------------------------------------------------

    def region_action(self) -> list[dict]:
        out = []
        for eid in self._pick([e for e in self.tracked() if self.entities[e]["actions"]]):
            acts = self.entities[eid]["actions"]
            parts = [f"{_says(a['action'])} from {self.tok(a['start'])} to {self.tok(a['end'])}" for a in acts]
            out.append(self._pair("region_action", "what_does_region_do", "What does <region> do in the video?",
                                  "It " + ", then ".join(parts) + ".", [eid], [eid], self._frames_of(eid)))
        return out

    def region_location(self) -> list[dict]:
        out = []
        h, w = self.m.get("height"), self.m.get("width")
        for eid in self._pick(self.tracked()):
            f = int(self.rng.choice(self._frames_of(eid)))
            box = _box(self.m["entities"][eid][f])
            out.append(self._pair("region_location", "where_is_region_at",
                                  f"Where is <region> at {self.tok(self.times[f])}?",
                                  f"In the {location_words(box, h, w)} of the frame.", [eid], [eid], [f]))
        return out

    def temporal_grounding(self) -> list[dict]:
        keys = sorted({(e["id"], a["action"]) for e in self.meta["entities"] for a in e["actions"]})
        out = []
        for eid, act in self._pick(keys):
            e = self.entities[eid]
            spans = [a for a in e["actions"] if a["action"] == act]
            verb = ACTION_PHRASES.get(act, (act, act))[0]
            ans = ", and ".join(f"from {self.tok(a['start'])} to {self.tok(a['end'])}" for a in spans)
            out.append(self._pair("temporal_grounding", "when_does", f"When does the {_strip(e['expression'])} "
                                  f"{verb}?", _cap(ans) + ".", [eid]))
        return out

    def counting(self) -> list[dict]:
        out = []
        nouns = sorted({e["noun"] for e in self.meta["entities"]})
        for noun in self._pick(nouns):
            ids = [e["id"] for e in self.meta["entities"] if e["noun"] == noun]
            out.append(self._pair("counting", "how_many_in_clip", f"How many {_plural(noun)} appear in the video?",
                                  f"{_cap(_count(len(ids)))}.", ids))
        tracked = self.tracked()
        for f in self._pick(list(range(len(self.times))), 1):
            ids = [e for e in tracked if self.present[e][f]]
            out.append(self._pair("counting", "how_many_at", f"How many of the tracked entities are visible at "
                                  f"{self.tok(self.times[f])}?", f"{_cap(_count(len(ids)))}.", ids, frames=[f]))
        return out

    def ordering(self) -> list[dict]:
        # Only actions seen starting in the clip, and the only one of their kind for their entity (the question
        # names an action, not an occurrence).
        once = [(e["id"], a) for e in self.meta["entities"] for a in e["actions"]
                if sum(b["action"] == a["action"] for b in e["actions"]) == 1]
        events = [(eid, a) for eid, a in once if not a.get("cut_start")]
        pairs = []
        for i, (ea, a) in enumerate(events):
            for eb, b in events[i + 1:]:
                ka, kb = time_token(a["start"], self.duration, self.n), time_token(b["start"], self.duration, self.n)
                if abs(ka - kb) >= 2 and (ea, a["action"]) != (eb, b["action"]):
                    pairs.append(((ea, a), (eb, b)) if self.rng.random() < 0.5 else ((eb, b), (ea, a)))
        out = []
        for (ea, a), (eb, b) in self._pick(pairs):
            phrase = [f"the {_strip(self.entities[e]['expression'])} {_says(x['action'])}"
                      for e, x in ((ea, a), (eb, b))]
            first = phrase[0] if a["start"] < b["start"] else phrase[1]
            out.append(self._pair("ordering", "which_first", f"Which happens first: {phrase[0]}, or {phrase[1]}?",
                                  f"{_cap(first)}.", [ea, eb]))
        return out

    def appearance_reentry(self) -> list[dict]:
        out = []
        for eid in self._pick(self.tracked()):
            frames = self._frames_of(eid)
            expr = _strip(self.entities[eid]["expression"])
            first = frames[0]
            ans = "It is visible from the start." if first == 0 else f"At {self.tok(self.times[first])}."
            out.append(self._pair("appearance_reentry", "first_appear", f"When does the {expr} first appear?", ans,
                                  [eid], frames=[first]))
            gone = [i for i in range(first, frames[-1]) if not self.present[eid][i]]
            if gone:
                back = next(i for i in frames if i > gone[0])
                leave, come = self.tok(self.times[gone[0]]), self.tok(self.times[back])
                ans = f"Yes. It leaves at {leave} and comes back at {come}."
                ref = [gone[0], back]
            else:
                ans, ref = "No.", []
            out.append(self._pair("appearance_reentry", "leaves_and_returns",
                                  "Does <region> leave the frame and come back?", ans, [eid], [eid], ref))
        return out

    def timestamp_yesno(self) -> list[dict]:
        out = []
        states = [(e["id"], act) for e in self.meta["entities"] for act in sorted({a["action"] for a in e["actions"]})
                  if act in STATE_PHRASES]
        grid = [token_time(k, self.duration, self.n) for k in range(self.n)]
        for eid, act in self._pick(states):
            spans = [(a["start"], a["end"]) for a in self.entities[eid]["actions"] if a["action"] == act]
            m = YESNO_MARGIN_S
            inside = [k for k, t in enumerate(grid) if any(s + m <= t <= e - m for s, e in spans)]
            outside = [k for k, t in enumerate(grid) if all(t < s - m or t > e + m for s, e in spans)]
            q = f"At <{{k}}>, is the {_strip(self.entities[eid]['expression'])} {STATE_PHRASES[act]}? Answer Yes or No."
            for ks, ans in ((inside, "Yes"), (outside, "No")):
                if ks:
                    k = int(self.rng.choice(ks))
                    out.append(self._pair("timestamp_yesno", "is_state_at", q.format(k=k), ans, [eid]))
        return out

    def all(self) -> list[dict]:
        return [p for fam in FAMILIES for p in getattr(self, fam)()]


def synthesize(clip: dict, meta: dict, masklets: dict, *, num_time_tokens: int = 32, per_family: int = 2,
               seed: int = 0) -> list[dict]:
    return Synthesizer(clip, meta, masklets, num_time_tokens=num_time_tokens, per_family=per_family, seed=seed).all()


def _says(action: str) -> str:
    """An action as an answer's verb phrase ('move_left' -> 'moves to the left'; a model's own text as is)."""
    return ACTION_PHRASES.get(action, (action, action))[1]


def _strip(expression: str) -> str:
    """'the red circle' -> 'red circle' (templates add their own article)."""
    return expression[4:] if expression.lower().startswith("the ") else expression


def _area(rle: dict) -> int:
    return int(coco_rle_decode(rle).sum())


def _box(rle: dict) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(coco_rle_decode(rle))
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
