"""Probe: quality of the Strefer masklet generator on the synthetic set, oracle detector, a given SAM2.

Per video of a split: 32 frames sampled uniformly (Strefer's n_frames), one expression per entity, the oracle
detector (ground-truth boxes, each edge jittered by N(0, 5 % of the box side)) in Strefer's anchor search,
SAM2 forward + backward from the anchor, synthetic referring matching. Each ground-truth entity is scored
against the masklet its expression was matched to (all-empty when none was):
- J&F (stvl_jax.eval.vos_metrics, DAVIS 2017 definitions) over the sampled frames, the prompted anchor frame left
  out; overall and per case (late_entry: absent on the first sampled frame; exit_reentry: more than one visible
  run; plain).
- late entry recovered: mean J >= 0.5 over its visible frames and judged absent on >= half of the frames before
  it enters; re-entry recovered: mean J >= 0.5 over the frames after its first return and absent on >= half of
  the gap frames.
- identity switches: per masklet, the ground-truth entity it overlaps with IoU >= 0.5 on each frame; a switch
  each time that entity changes between consecutive such frames.
Controls beside them: `empty` (no masks at all), `box_copy` (the jittered anchor box filled, on every frame),
`mask_copy` (the true anchor mask on every frame: the always-on baseline).

    python -m research.probes.strefer_masklet_quality --synth runs/synth_vos --split test \
        --sam2-hf runs/sam2-tiny/hf --out runs/strefer_masklets/quality.json
    # Meta's package instead: --sam2-meta-config configs/sam2.1/sam2.1_hiera_t.yaml [--sam2-meta-ckpt X.pt]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from data_pipelines.strefer.masklets import MaskletGenerator
from data_pipelines.strefer.masklets.synthetic import entity_expressions, gt_boxes_fn, gt_masks, load_clip
from stvl_jax.eval.vos_metrics import aggregate, region_similarity, score_object


def _runs(present: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], present.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def recovery(gt: np.ndarray, pred: np.ndarray) -> dict:
    """Late entry / re-entry recovered for one entity: gt, pred (T, H, W) bool."""
    vis, pred_on = gt.any(axis=(1, 2)), pred.any(axis=(1, 2))
    j = region_similarity(gt, pred)
    runs = _runs(vis)
    out = {}
    if runs and runs[0][0] > 0:
        before = slice(0, runs[0][0])
        out["late_entry"] = bool(j[vis].mean() >= 0.5 and (~pred_on[before]).mean() >= 0.5)
    if len(runs) > 1:
        k = np.arange(len(vis))
        back = vis & (k >= runs[1][0])  # visible again, after the first return
        gaps = ~vis & (k > runs[0][1]) & (k < runs[-1][0])  # absent between the first and the last run
        out["exit_reentry"] = bool(j[back].mean() >= 0.5 and (~pred_on[gaps]).mean() >= 0.5)
    return out


def identity_switches(gts: list[np.ndarray], pred: np.ndarray) -> int:
    """Changes of the ground-truth entity (IoU >= 0.5) a predicted masklet covers, over its frames."""
    seq = []
    for k in range(pred.shape[0]):
        ious = [region_similarity(g[k:k + 1], pred[k:k + 1])[0] if pred[k].any() else 0.0 for g in gts]
        if ious and max(ious) >= 0.5:
            seq.append(int(np.argmax(ious)))
    return sum(a != b for a, b in zip(seq, seq[1:]))


def box_mask(box, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return m


def evaluate_video(gen, synth: str, vid: str, n_frames: int) -> dict:
    frames, gt, idx = load_clip(synth, vid, n_frames)
    ex, nouns, ids = entity_expressions(gt)
    fn = gt_boxes_fn(gt, idx, ids)
    res = gen.generate(frames, ex, nouns=nouns, boxes_fn=fn)
    t, h, w = frames.shape[:3]
    by_expr = res.by_expression()
    gts = [gt_masks(gt, idx, eid) for eid in ids]
    scored = np.ones(t, bool)
    if res.anchor_frame is not None:
        scored[res.anchor_frame] = False
    objs = {"model": [], "empty": [], "box_copy": [], "mask_copy": []}
    rec, switches = [], 0
    anchor_boxes = {e: b for b, e in fn(res.anchor_frame)} if res.anchor_frame is not None else {}
    for i, g in enumerate(gts):
        vis = g.any(axis=(1, 2))
        runs = _runs(vis)
        cases = (["late_entry"] if runs and runs[0][0] > 0 else []) + (["exit_reentry"] if len(runs) > 1 else [])
        ent = by_expr.get(i)
        pred = res.mask_array(ent) if ent is not None else np.zeros_like(g)
        a = res.anchor_frame if res.anchor_frame is not None else int(np.argmax(vis))
        controls = {"model": pred, "empty": np.zeros_like(g),
                    "box_copy": np.repeat(box_mask(ent.anchor_box if ent else anchor_boxes.get(i, (0, 0, 0, 0)),
                                                   h, w)[None], t, 0),
                    "mask_copy": np.repeat(g[a][None], t, 0)}
        for name, p in controls.items():
            objs[name].append({**score_object(g, p, scored), "cases": cases})
        rec.append(recovery(g, pred))
        if ent is not None:
            switches += identity_switches(gts, pred)
    return {"vid": vid, "objects": objs, "recovery": rec, "switches": switches, "counts": res.counts,
            "anchor": res.anchor_frame, "entities": len(ids)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synth", required=True, help="a synthetic set (stvl data synth [--preset vos])")
    ap.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    ap.add_argument("--limit", type=int, default=0, help="at most this many videos (0: all)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--jitter", type=float, default=0.05)
    ap.add_argument("--sam2-hf", help="an HF Sam2Video directory (e.g. `stvl convert export` of a JAX SAM2)")
    ap.add_argument("--sam2-meta-config", help="Meta sam2 Hydra config name (with --sam2-meta-ckpt or random)")
    ap.add_argument("--sam2-meta-ckpt")
    ap.add_argument("--meta-override", action="append", default=[], help="Hydra override of the Meta model")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if bool(a.sam2_hf) == bool(a.sam2_meta_config):
        ap.error("give exactly one of --sam2-hf DIR and --sam2-meta-config NAME")
    tracker = ({"backend": "hf", "path": a.sam2_hf} if a.sam2_hf else
               {"backend": "sam2", "model_config": a.sam2_meta_config, "path": a.sam2_meta_ckpt,
                "model_overrides": a.meta_override})
    gen = MaskletGenerator({"torch_threads": a.torch_threads, "tracker": tracker,
                            "detector": {"kind": "oracle", "oracle_jitter": a.jitter},
                            "matching": {"kind": "synthetic"}}).setup()
    manifest = json.load(open(os.path.join(a.synth, "manifest.json")))
    vids = [v for s, vs in manifest["splits"].items() if a.split in (s, "all") for v in vs]
    vids = vids[:a.limit] if a.limit else vids
    t0, per_video = time.time(), []
    for n, vid in enumerate(vids):
        per_video.append(evaluate_video(gen, a.synth, vid, a.frames))
        print(f"[{n + 1}/{len(vids)}] {vid}: {per_video[-1]['entities']} entities, anchor "
              f"{per_video[-1]['anchor']}, JF {np.mean([o['JF'] for o in per_video[-1]['objects']['model']]):.3f}, "
              f"failures {per_video[-1]['counts']}", flush=True)
    summary = {name: aggregate([o for v in per_video for o in v["objects"][name]]) for name in
               ("model", "empty", "box_copy", "mask_copy")}
    rec = [r for v in per_video for r in v["recovery"]]
    counts: dict[str, int] = {}
    for v in per_video:
        for k, c in v["counts"].items():
            counts[k] = counts.get(k, 0) + c
    report = {
        "videos": len(vids), "entities": sum(v["entities"] for v in per_video), "seconds": round(time.time() - t0, 1),
        "tracker": tracker, "frames": a.frames, "jitter": a.jitter,
        "jf": {k: {"overall": s["overall"]["JF"], **{c: s["per_case"][c]["JF"] for c in s["per_case"]}}
               for k, s in summary.items()},
        "late_entry_recovered": [sum(r["late_entry"] for r in rec if "late_entry" in r),
                                 sum("late_entry" in r for r in rec)],
        "reentry_recovered": [sum(r["exit_reentry"] for r in rec if "exit_reentry" in r),
                              sum("exit_reentry" in r for r in rec)],
        "identity_switches": sum(v["switches"] for v in per_video), "failures": counts,
    }
    print(f"\n{report['videos']} videos, {report['entities']} entities, {report['seconds']} s; SAM2 {tracker}")
    cases = sorted({c for s in report["jf"].values() for c in s})
    print("J&F        " + "".join(f"{c:>14}" for c in cases))
    for k, s in report["jf"].items():
        print(f"{k:<11}" + "".join(f"{s.get(c, float('nan')):>14.3f}" for c in cases))
    print(f"late entry recovered {report['late_entry_recovered'][0]}/{report['late_entry_recovered'][1]}, re-entry "
          f"recovered {report['reentry_recovered'][0]}/{report['reentry_recovered'][1]}, identity switches "
          f"{report['identity_switches']}, failures {counts}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"summary": report, "per_video": [{k: v[k] for k in v if k != "objects"} for v in per_video]},
                      f, indent=1)
    return report


if __name__ == "__main__":
    main()
