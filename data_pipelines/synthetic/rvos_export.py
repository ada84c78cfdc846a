"""`stvl data synth --export rvos`: the synthetic set in MeViS's referring-segmentation layout, so that the readers
of real sets (`data_pipelines.formats.rvos`, format "synthetic") read it unchanged:

    ROOT/rvos/SPLIT/meta_expressions.json   {"videos": {VID: {"vid_id", "frames": ["00000", ...], "expressions":
                                             {EXP_ID: {"exp", "obj_id": [entity], "anno_id": [id], "kind"}},
                                             "objects": {entity: anno_id}}}}
    ROOT/rvos/SPLIT/mask_dict.json          {anno_id: [COCO compressed RLE or null per frame]}, one per entity
    ROOT/rvos/SPLIT/JPEGImages/VID/FRAME.jpg   the decoded video frames (JPEG quality 95, no chroma subsampling)

Expressions and kinds: `synthetic.referring.rvos_expressions` (colour / shape / timing), from the ground truth.
"""

from __future__ import annotations

import json
import os

from data_pipelines.rle import coco_rle_encode, rle_decode
from data_pipelines.synthetic.referring import rvos_expressions

JPEG_QUALITY = 95


def _frame_name(k: int) -> str:
    return f"{k:05d}"


def export_video(gt: dict, frames_dir: str, frames, first_anno: int) -> tuple[dict, dict]:
    """One ground-truth document + its decoded frames (T, H, W, 3) -> (meta entry, mask_dict part); writes the
    JPEG frames under frames_dir/VID/. Anno ids are first_anno, first_anno + 1, ... in entity order."""
    from PIL import Image

    n = gt["num_frames"]
    names = [_frame_name(k) for k in range(n)]
    vdir = os.path.join(frames_dir, gt["vid"])
    os.makedirs(vdir, exist_ok=True)
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(os.path.join(vdir, name + ".jpg"), quality=JPEG_QUALITY, subsampling=0)
    anno = {e["id"]: str(first_anno + i) for i, e in enumerate(gt["entities"])}
    masks = {a: [None] * n for a in anno.values()}
    for k, fr in enumerate(gt["frames"]):
        for o in fr["objects"]:
            masks[anno[o["entity"]]][k] = coco_rle_encode(rle_decode(o["rle"]))
    exps = {str(i): {"exp": x["exp"], "obj_id": [x["entity"]], "anno_id": [anno[x["entity"]]], "kind": x["kind"]}
            for i, x in enumerate(rvos_expressions(gt))}
    entry = {"vid_id": int(gt["vid"].rsplit("_", 1)[-1]), "frames": names, "expressions": exps,
             "objects": {str(k): v for k, v in anno.items()}}
    return entry, masks


def export_rvos(root: str, progress: bool = False) -> dict:
    """Write ROOT/rvos/ from the set at ROOT (its manifest, annotations and videos) -> {split: expression count}."""
    from data_pipelines.video import decode_frames

    with open(os.path.join(root, "manifest.json")) as f:
        splits = json.load(f)["splits"]
    counts = {}
    for split, vids in splits.items():
        d = os.path.join(root, "rvos", split)
        os.makedirs(d, exist_ok=True)
        videos, mask_dict = {}, {}
        it = vids
        if progress:
            from tqdm import tqdm

            it = tqdm(vids, desc=f"rvos export {split}", unit="video")
        for vid in it:
            with open(os.path.join(root, "annotations", vid + ".json")) as f:
                gt = json.load(f)
            video = os.path.normpath(os.path.join(root, "annotations", gt["video"]))
            frames = decode_frames(video, list(range(gt["num_frames"])))
            entry, masks = export_video(gt, os.path.join(d, "JPEGImages"), frames, len(mask_dict))
            videos[vid] = entry
            mask_dict.update(masks)
        with open(os.path.join(d, "meta_expressions.json"), "w") as f:
            json.dump({"videos": videos}, f, indent=1)
        with open(os.path.join(d, "mask_dict.json"), "w") as f:
            json.dump(mask_dict, f, separators=(",", ":"))
        counts[split] = sum(len(v["expressions"]) for v in videos.values())
    return counts
