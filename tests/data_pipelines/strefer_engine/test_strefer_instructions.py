"""Stage 5: every synthesized answer checked against the synthetic set's raw ground truth (the per-frame
objects and the full-video action list), re-derived here by hand, not from the engine's metadata."""

import json
import os
import re
from collections import Counter

import pytest

N = 32  # EngineConfig.num_time_tokens
VERB_Q = {"move to the left": "move_left", "move to the right": "move_right", "stand still": "stop",
          "enter the scene": "enter", "leave the scene": "exit", "bounce off the wall": "bounce",
          "bump into another shape": "collide", "get partly hidden": "occluded"}
VERB_A = {"moves to the left": "move_left", "moves to the right": "move_right", "stands still": "stop",
          "enters the scene": "enter", "leaves the scene": "exit", "bounces off the wall": "bounce",
          "bumps into another shape": "collide", "is partly hidden": "occluded"}
STATE = {"moving to the left": "move_left", "moving to the right": "move_right", "standing still": "stop",
         "partly hidden": "occluded", "entering the scene": "enter", "leaving the scene": "exit"}
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


class Truth:
    """The raw annotation of the shot a clip lies in, with the clip's offset."""

    def __init__(self, root, ex):
        ann = json.load(open(os.path.join(root, "annotations", ex["video_id"] + ".json")))
        first = ex["start_frame"]
        if "shots" in ann:
            shot = next(s for s in ann["shots"] if s["start_frame"] <= first < s["start_frame"] + s["num_frames"])
            first -= shot["start_frame"]
            self.offset = shot["start_frame"]
            ann = json.load(open(os.path.join(root, "annotations", shot["annotation"])))
        else:
            self.offset = 0
        self.ann, self.first, self.n = ann, first, ex["end_frame"] - ex["start_frame"]
        self.t0 = first / ann["fps"]
        self.duration = self.n / ann["fps"]
        self.sampled = [int(i) - self.offset for i in ex["frame_indices"]]
        self.by_name = {f"{e['color']} {e['category']}": e["id"] for e in ann["entities"]}

    def tok(self, sec_in_clip):
        return min(N - 1, max(0, round((N - 1) * sec_in_clip / self.duration)))

    def objects(self, frame):  # {entity: object} at a shot frame
        return {o["entity"]: o for o in self.ann["frames"][frame]["objects"]}

    def in_clip(self):
        return {o["entity"] for f in range(self.first, self.first + self.n) for o in self.ann["frames"][f]["objects"]}

    def spans(self, eid, action):  # (start, end) in clip seconds of the GT actions overlapping the clip
        t1 = self.t0 + self.duration
        return [(max(a["start"], self.t0) - self.t0, min(a["end"], t1) - self.t0, a["start"] >= self.t0)
                for a in self.ann["actions"]
                if a["entity"] == eid and a["action"] == action and a["end"] > self.t0 and a["start"] < t1]


def _toks(text):
    return [int(k) for k in re.findall(r"<(\d+)>", text)]


def check(t: Truth, ex, p):
    """Asserts one pair against the ground truth."""
    q, a = p["question"], p["answer"]
    regions = p["regions"]
    if p["template"] == "what_does_region_do":
        (eid,) = regions
        parts = a[len("It "):-1].split(", then ")
        got = []
        for part in parts:
            m = re.fullmatch(r"(.+) from <(\d+)> to <(\d+)>", part)
            got.append((VERB_A[m.group(1)], int(m.group(2)), int(m.group(3))))
        want = sorted({(act, t.tok(s), t.tok(e)) for act in VERB_A.values() for s, e, _ in t.spans(eid, act)})
        assert sorted(got) == want
    elif p["template"] == "where_is_region_at":
        (eid,), (f,) = regions, p["frames"]
        frame = t.sampled[f]
        assert _toks(q) == [t.tok(frame / t.ann["fps"] - t.t0)]
        x, y, w, h = t.objects(frame)[eid]["box"]
        cx, cy = (x + w / 2) / t.ann["width"], (y + h / 2) / t.ann["height"]
        row, col = ["top", "middle", "bottom"][min(2, int(cy * 3))], ["left", "center", "right"][min(2, int(cx * 3))]
        cell = "center" if (row, col) == ("middle", "center") else f"{row} {col}"
        assert a == f"In the {cell} of the frame."
    elif p["template"] == "when_does":
        m = re.fullmatch(r"When does the (\w+ \w+) (.+)\?", q)
        eid, act = t.by_name[m.group(1)], VERB_Q[m.group(2)]
        want = [(t.tok(s), t.tok(e)) for s, e, _ in t.spans(eid, act)]
        got = [tuple(int(v) for v in x) for x in re.findall(r"from <(\d+)> to <(\d+)>", a.lower())]
        assert got == want and want
    elif p["template"] == "how_many_in_clip":
        noun = re.fullmatch(r"How many (\w+)s appear in the video\?", q).group(1)
        n = sum(e["category"] == noun for e in t.ann["entities"] if e["id"] in t.in_clip())
        assert a == WORDS[n].capitalize() + "."
    elif p["template"] == "how_many_at":
        (f,) = p["frames"]
        frame = t.sampled[f]
        assert _toks(q) == [t.tok(frame / t.ann["fps"] - t.t0)]
        assert a == WORDS[len(t.objects(frame))].capitalize() + "."
    elif p["template"] == "which_first":
        m = re.fullmatch(r"Which happens first: the (\w+ \w+) (.+), or the (\w+ \w+) (.+)\?", q)
        starts = []
        for name, verb in ((m.group(1), m.group(2)), (m.group(3), m.group(4))):
            (s, _, whole), = t.spans(t.by_name[name], VERB_A[verb])  # exactly one, seen starting in the clip
            assert whole
            starts.append(s)
        first = 0 if starts[0] < starts[1] else 1
        assert abs(t.tok(starts[0]) - t.tok(starts[1])) >= 2
        assert a == f"The {m.group(1 + 2 * first)} {m.group(2 + 2 * first)}."
    elif p["template"] == "first_appear":
        eid = t.by_name[re.fullmatch(r"When does the (\w+ \w+) first appear\?", q).group(1)]
        present = [eid in t.objects(f) for f in t.sampled]
        i = present.index(True)
        assert a == ("It is visible from the start." if i == 0
                     else f"At <{t.tok(t.sampled[i] / t.ann['fps'] - t.t0)}>.")
    elif p["template"] == "leaves_and_returns":
        (eid,) = regions
        present = [eid in t.objects(f) for f in t.sampled]
        on = [i for i, v in enumerate(present) if v]
        gaps = [i for i in range(on[0], on[-1]) if not present[i]]
        if not gaps:
            assert a == "No."
        else:
            back = next(i for i in on if i > gaps[0])
            tt = [t.tok(t.sampled[i] / t.ann["fps"] - t.t0) for i in (gaps[0], back)]
            assert a == f"Yes. It leaves at <{tt[0]}> and comes back at <{tt[1]}>."
    elif p["template"] == "is_state_at":
        m = re.fullmatch(r"At <(\d+)>, is the (\w+ \w+) (.+)\? Answer Yes or No\.", q)
        k, eid, act = int(m.group(1)), t.by_name[m.group(2)], STATE[m.group(3)]
        tk = k * t.duration / (N - 1)
        true = any(s <= tk <= e for s, e, _ in t.spans(eid, act))
        assert a == ("Yes" if true else "No")
    else:
        raise AssertionError(f"unchecked template {p['template']}")
    for eid in p["entities"]:
        assert eid in t.in_clip()


def test_every_answer_consistent_with_ground_truth(strefer_set, strefer_run, tmp_path):
    summary, examples = strefer_run
    fams, templates, checked = Counter(), Counter(), 0
    for ex in examples:
        t = Truth(strefer_set, ex)
        for p in ex["instructions"]:
            try:
                check(t, ex, p)
            except Exception as e:  # name the pair that failed
                raise AssertionError(f"{ex['clip_id']}: {p}") from e
            fams[p["family"]] += 1
            templates[p["template"]] += 1
            checked += 1
    print(f"\n{checked} pairs checked against the ground truth, 100% consistent; per family:")
    for f, n in sorted(fams.items()):
        print(f"  {f:20s} {n:4d}  ({100 * n / checked:.1f}%)")
    from data_pipelines.strefer.instructions import FAMILIES

    assert set(fams) == set(FAMILIES)  # every family occurs on this set
    assert checked == summary["counters"]["pairs"] and checked > 100
    assert dict(fams) == {f: summary["counters"][f"family_{f}"] for f in FAMILIES}
    from data_pipelines.strefer.run import plot_families

    plot_families(summary["counters"], str(tmp_path / "families.png"))
    assert os.path.getsize(tmp_path / "families.png") > 1000


def test_time_tokens_follow_strefer():
    from data_pipelines.strefer.instructions import time_token

    # k = round((N - 1) * sec / duration): hand values for a 10 s clip and N = 32
    assert [time_token(s, 10.0, 32) for s in (0, 0.16, 0.17, 5.0, 9.9, 10.0, 12.0)] == [0, 0, 1, 16, 31, 31, 31]


def test_region_pairs_carry_masklets_and_frames(strefer_run):
    _, examples = strefer_run
    for ex in examples:
        masklets = ex["masklets"]["entities"]
        assert len(ex["frame_indices"]) == 32 and all(len(m) == 32 for m in masklets.values())
        for p in ex["instructions"]:
            for eid in p["regions"]:
                assert str(eid) in masklets and "<region>" in p["question"]
            for f in p["frames"]:
                assert 0 <= f < 32


def test_same_clip_same_pairs():
    from data_pipelines.strefer.instructions import synthesize

    clip = {"clip_id": "v/s000c000", "start": 0.0, "end": 4.0}
    meta = {"entities": [{"id": 1, "expression": "the red circle", "noun": "circle", "general_noun": "shape",
                          "actions": [{"action": "move_left", "start": 0.0, "end": 2.0},
                                      {"action": "stop", "start": 2.5, "end": 4.0}]}]}
    rle = {"size": [4, 4], "counts": [5, 2, 2, 2, 5]}
    masklets = {"frame_times": [0.0, 1.0, 2.0, 3.0], "height": 4, "width": 4, "entities": {1: [rle] * 4}}
    a = synthesize(clip, meta, masklets)
    assert a == synthesize(clip, meta, masklets) and a
    ans = {p["template"]: p["answer"] for p in a}
    # hand-computed: 4 s clip, N = 32 -> 2.0 s is <16>, 2.5 s <19>, 4.0 s <31>; the 2x2 mask sits at rows 1-2,
    # columns 1-2 of a 4x4 frame: centre (2, 2) / 4 -> cell (middle, center)
    assert ans["what_does_region_do"] == "It moves to the left from <0> to <16>, then stands still from <19> to <31>."
    assert ans["where_is_region_at"] == "In the center of the frame."
    assert ans["which_first"] in ("The red circle moves to the left.",)


def _mutate(p):
    """A wrong version of a pair's answer: every time token moved by 3, Yes/No flipped, counts and cells changed."""
    a = p["answer"]
    exact = {"Yes": "No", "No": "Yes", "No.": "Yes. It leaves at <1> and comes back at <9>."}
    swaps = [("top", "bottom"), ("bottom", "top"), ("middle", "top"), ("In the center", "In the top left"),
             ("One.", "Two."), ("Two.", "Three."), ("Three.", "One."), ("Four.", "One."), ("Zero.", "One."),
             ("visible from the start", "at <5>")]
    b = re.sub(r"<(\d+)>", lambda m: f"<{(int(m.group(1)) + 3) % N}>", a)
    if a in exact:
        b = exact[a]
    elif b == a:
        for x, y in swaps:
            if a.startswith(x) or x in a:
                b = a.replace(x, y, 1)
                break
    if p["template"] == "which_first":  # name the other option
        m = re.fullmatch(r"Which happens first: the (.+), or the (.+)\?", p["question"])
        b = f"The {m.group(2) if a == f'The {m.group(1)}.' else m.group(1)}."
    return {**p, "answer": b}


def test_checker_rejects_wrong_answers(strefer_set, strefer_run):
    """The consistency check can fail: a corrupted copy of every pair is refused."""
    _, examples = strefer_run
    seen = Counter()
    for ex in examples:
        t = Truth(strefer_set, ex)
        for p in ex["instructions"]:
            bad = _mutate(p)
            assert bad["answer"] != p["answer"], p
            with pytest.raises(Exception):
                check(t, ex, bad)
            seen[(p["template"], p["answer"].split(" ")[0])] += 1
    print("\nrefused corrupted answers per (template, answer start):", dict(sorted(seen.items())))
