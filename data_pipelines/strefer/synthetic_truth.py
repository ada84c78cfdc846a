"""The synthetic set's ground truth seen through a clip: entities, actions and masklets of [start, end).

The annotation of `videos/<stem>.mp4` (a local path or a remote URI, see `data_pipelines.storage`) is
`annotations/<stem>.json` (or `<stem>.json` beside the video); a multi-shot video's annotation
(`synthetic.multishot`) points to one single-shot annotation per shot, and a clip
must lie inside one shot (else AnnotationError "clip_crosses_cut": shot detection missed a cut).
"""

from __future__ import annotations

import json
import os

from data_pipelines.errors import AnnotationError
from data_pipelines.storage import absolute, isfile, normpath, read_text

EXPRESSION_KIND = "attribute"  # "the <colour> <shape>": unique within a video (colours are distinct)
GENERAL_NOUN = "shape"  # Strefer's generalized noun of every synthetic entity (its detector prompt)


class TruthReader:
    """Reads and caches annotations (a worker sees many clips of one video)."""

    def __init__(self, cache_size: int = 16):
        self._cache: dict[str, dict] = {}
        self._cache_size = cache_size

    def _load(self, path: str) -> dict:
        if path not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            try:
                self._cache[path] = json.loads(read_text(path))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
                raise AnnotationError("bad_ground_truth", f"cannot read ground truth ({e})", path) from None
        return self._cache[path]

    def _annotation_path(self, video: str) -> str:
        stem = os.path.splitext(os.path.basename(video))[0]
        d = os.path.dirname(absolute(video))
        for p in (os.path.join(d, "..", "annotations", stem + ".json"), os.path.join(d, stem + ".json")):
            if isfile(normpath(p)):
                return normpath(p)
        raise AnnotationError("no_ground_truth", "the synthetic annotator needs the set's annotations/<stem>.json "
                                                 "(is this a video of `stvl data synth`?)", video)

    def shot(self, clip: dict) -> tuple[dict, int]:
        """(single-shot annotation, the clip's first frame in that shot's own frame numbers)."""
        path = self._annotation_path(clip["video"])
        ann = self._load(path)
        if "shots" not in ann:
            return ann, clip["start_frame"]
        for sh in ann["shots"]:
            a, n = sh["start_frame"], sh["num_frames"]
            if a <= clip["start_frame"] < a + n:
                if clip["end_frame"] > a + n:
                    raise AnnotationError("clip_crosses_cut", f"frames [{clip['start_frame']}, {clip['end_frame']}) "
                                          f"cross the cut at frame {a + n}", clip["clip_id"])
                sub = normpath(os.path.join(os.path.dirname(path), sh["annotation"]))
                return self._load(sub), clip["start_frame"] - a
        raise AnnotationError("no_ground_truth", f"frame {clip['start_frame']} is in no shot", path)

    def metadata(self, clip: dict) -> dict:
        """Entities visible in the clip (by id), their expression, noun and actions clipped to the clip."""
        ann, first = self.shot(clip)
        n = clip["end_frame"] - clip["start_frame"]
        fps = float(ann["fps"])
        t0, t1 = first / fps, (first + n) / fps
        visible = sorted({o["entity"] for fr in ann["frames"][first:first + n] for o in fr["objects"]})
        exprs = {}
        for r in ann["referring_expressions"]:
            if r["kind"] == EXPRESSION_KIND:
                exprs.setdefault(r["entity"], r["expression"])
        by_id = {e["id"]: e for e in ann["entities"]}
        entities = []
        for eid in visible:
            acts = []
            for a in ann["actions"]:
                if a["entity"] != eid or a["end"] <= t0 or a["start"] >= t1:
                    continue
                item = {"action": a["action"], "start": round(max(a["start"], t0) - t0, 4),
                        "end": round(min(a["end"], t1) - t0, 4),
                        "cut_start": a["start"] < t0, "cut_end": a["end"] > t1 or bool(a.get("truncated"))}
                if "other" in a:
                    item["other"] = a["other"]
                if a["action"] == "enter":
                    item["occurrence"] = a.get("occurrence", 0)
                acts.append(item)
            entities.append({"id": eid, "expression": exprs[eid], "noun": by_id[eid]["category"],
                             "general_noun": GENERAL_NOUN, "actions": acts})
        return {"entities": entities}

    def masklets(self, clip: dict, frame_indices, entity_ids) -> dict:
        """{entity id: [RLE or None per frame index]} for the clip's sampled source frames (video numbering)."""
        ann, first = self.shot(clip)
        offset = clip["start_frame"] - first
        out = {eid: [] for eid in entity_ids}
        for f in frame_indices:
            objs = {o["entity"]: o["rle"] for o in ann["frames"][int(f) - offset]["objects"]}
            for eid in entity_ids:
                out[eid].append(objs.get(eid))
        return out
