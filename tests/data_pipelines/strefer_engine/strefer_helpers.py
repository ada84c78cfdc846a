"""Helpers shared by the Strefer engine tests (a module of its own: `conftest` is ambiguous across test dirs)."""

import json

MULTISHOT = (0, 1, 2)  # the set indices joined into the fixture's multi-shot video


def read_dataset(data_dir: str) -> list[dict]:
    """Every example of a strefer TFDS dataset, sorted by clip id, text features decoded."""
    import tensorflow_datasets as tfds

    src = tfds.data_source("strefer", split="train", data_dir=data_dir)
    out = []
    for i in range(len(src)):
        ex = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in src[i].items()}
        for k in ("metadata", "masklets", "instructions", "record"):
            ex[k] = json.loads(ex[k])
        out.append(ex)
    return sorted(out, key=lambda e: e["clip_id"])
