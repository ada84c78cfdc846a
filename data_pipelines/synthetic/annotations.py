"""Per-video ground truth of the synthetic set: entities, per-frame instance masks (RLE), actions with
start/end seconds, and referring expressions. Schema: docs/data.md ("Synthetic set")."""

from __future__ import annotations

import numpy as np

from data_pipelines.rle import rle_encode
from data_pipelines.synthetic.render import full_shape_area
from data_pipelines.synthetic.scene import SIM_HZ, Scene, half_width, trajectory_actions
from data_pipelines.synthetic.vocabulary import BACKGROUND, OCCLUDER, PALETTE, entity_name

SCHEMA = "stvl-synth-video/1"
OCCLUDED_BELOW = 0.6  # visible / unoccluded area under which a fully in-frame entity counts as occluded


def _box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def frame_objects(scene: Scene, ids_per_frame: list[np.ndarray]) -> tuple[list[dict], dict]:
    """Per frame the visible instances, and per entity the visible fraction per frame (for occlusion)."""
    frames, vis = [], {e.id: np.zeros(scene.num_frames) for e in scene.entities}
    for k, ids in enumerate(ids_per_frame):
        objects = []
        for i, e in enumerate(scene.entities):
            mask = ids == e.id
            area = int(mask.sum())
            if area == 0:
                continue
            full = full_shape_area(scene, i, k)
            vis[e.id][k] = area / full if full else 0.0
            objects.append({"entity": e.id, "rle": rle_encode(mask), "box": _box(mask), "area": area,
                            "visible_fraction": round(area / full, 4) if full else 0.0})
        frames.append({"index": k, "time": round(k / scene.fps, 4), "objects": objects})
    return frames, vis


def occlusion_actions(scene: Scene, vis: dict) -> list[dict]:
    """Runs of >= 2 frames where an entity is fully inside the frame but less than 60 % visible."""
    out = []
    for i, e in enumerate(scene.entities):
        steps = [scene.frame_step(k) for k in range(scene.num_frames)]
        x = scene.x[i, steps]
        r = half_width(e.category, e.radius)
        inside = ~np.isnan(x) & (np.nan_to_num(x) - r >= 0) & (np.nan_to_num(x) + r <= scene.width)
        flag = inside & (vis[e.id] < OCCLUDED_BELOW)
        f = np.concatenate([[0], flag.astype(np.int8), [0]])
        d = np.diff(f)
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1):
            if b > a:
                out.append({"entity": e.id, "action": "occluded", "start": round(a / scene.fps, 2),
                            "end": round(b / scene.fps, 2)})
    return out


def referring_expressions(entities: list[dict], actions: list[dict]) -> list[dict]:
    """Unambiguous expressions per entity: colour+shape always; size+shape, 'the only X', 'the X that
    enters first/last' and 'the X that leaves and comes back' when they single the entity out."""
    out = []
    by_cat: dict[str, list[dict]] = {}
    for e in entities:
        by_cat.setdefault(e["category"], []).append(e)
    reenterers = {a["entity"] for a in actions if a["action"] == "enter" and a.get("occurrence", 0) >= 1}
    for e in entities:
        cat, same = e["category"], by_cat[e["category"]]
        out.append({"entity": e["id"], "expression": f"the {e['name']}", "kind": "attribute"})
        if len(same) == 1:
            out.append({"entity": e["id"], "expression": f"the only {cat}", "kind": "category"})
            continue
        if sum(o["size"] == e["size"] for o in same) == 1:
            out.append({"entity": e["id"], "expression": f"the {e['size']} {cat}", "kind": "attribute"})
        times = sorted(o["first_visible"] for o in same if o["first_visible"] is not None)
        if e["first_visible"] is None:
            continue
        gaps_ok = all(b - a >= 0.5 for a, b in zip(times, times[1:]))
        if gaps_ok and e["first_visible"] == times[-1] and times[-1] > 0:
            out.append({"entity": e["id"], "expression": f"the {cat} that enters last", "kind": "temporal"})
            out.append({"entity": e["id"], "expression": f"the {e['name']} that enters last", "kind": "temporal"})
        if gaps_ok and e["first_visible"] == times[0] and sum(t == 0 for t in times) == 0:
            out.append({"entity": e["id"], "expression": f"the {cat} that enters first", "kind": "temporal"})
        same_re = [o for o in same if o["id"] in reenterers]
        if len(same_re) == 1 and same_re[0]["id"] == e["id"]:
            out.append({"entity": e["id"], "expression": f"the {cat} that leaves and comes back", "kind": "temporal"})
    return out


def build_ground_truth(scene: Scene, ids_per_frame: list[np.ndarray], vid: str, video_path: str, split: str) -> dict:
    """The per-video annotation document (JSON-serializable)."""
    frames, vis = frame_objects(scene, ids_per_frame)
    actions = trajectory_actions(scene) + occlusion_actions(scene, vis)
    actions = [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in a.items()} for a in actions]
    actions.sort(key=lambda a: (a["start"], a["entity"], a["action"]))
    entities = []
    for e in scene.entities:
        entities.append({"id": e.id, "category": e.category, "color": e.color, "rgb": list(PALETTE[e.color]),
                         "size": e.size, "radius": e.radius, "layer": e.layer, "lane_y": round(e.lane_y, 2),
                         "speed": round(e.speed, 3), "name": entity_name(e.color, e.category)})
    for i, ent in enumerate(entities):
        present = ~np.isnan(scene.x[i])
        ent["first_visible"] = round(float(np.argmax(present)) / SIM_HZ, 2) if present.any() else None
    return {
        "schema": SCHEMA, "vid": vid, "split": split, "video": video_path,
        "width": scene.width, "height": scene.height, "fps": scene.fps, "num_frames": scene.num_frames,
        "duration": float(scene.duration), "background": list(BACKGROUND),
        "occluders": [{"box": list(b), "rgb": list(OCCLUDER)} for b in scene.occluders],
        "collide_pairs": [list(p) for p in scene.collide_pairs],
        "entities": entities, "actions": actions,
        "referring_expressions": referring_expressions(entities, actions),
        "frames": frames,
    }
