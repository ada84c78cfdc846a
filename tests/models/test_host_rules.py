"""The numpy host package: importable without JAX, and one M-RoPE rule for the pipeline and the model.

Positions are checked for both families x both `video_position_advance` settings: the Grain pipeline's per-example
`example_positions` == the model's fallback (`inputs.rope_index`, i.e. `get_rope_index` with the model config) ==
the reference. The reference is transformers' `get_rope_index` (5.23) for "transformers"; for "qwen" it is the
original Qwen2.5-VL rule, transcribed below from transformers v4.49-4.51
`src/transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py` (`Qwen2_5_VLForConditionalGeneration.get_rope_index`):
each text run starts at `llm_pos_ids_list[-1].max() + 1` (1 + the largest position used so far).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from qwen_vl_helpers import build_batch, tiny_hf_config


def test_host_package_and_data_pipelines_import_without_jax():
    """(The `grain` library itself imports JAX, so `data_pipelines.grain.pipeline` is left out.)"""
    code = ("import sys; import data_pipelines.grain.examples, data_pipelines.grain.text, data_pipelines.video; "
            "import stvl_jax.models.qwen_vl.host.preprocess, stvl_jax.models.qwen_vl.host.positions, "
            "stvl_jax.models.qwen_vl.host.placeholders; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'jaxlib')); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _original_qwen25(types: np.ndarray, grids_img, grids_vid, secs, tps: float, merge: int) -> np.ndarray:
    """transformers 4.49-4.51 Qwen2.5-VL get_rope_index for one unpadded row (see the module docstring)."""
    pieces, ii, vi = [], 0, 0
    s = 0
    while s < len(types):
        e = s
        while e < len(types) and types[e] == types[s]:
            e += 1
        st_idx = int(pieces[-1].max()) + 1 if pieces else 0
        if types[s] == 0:
            pieces.append(np.broadcast_to(np.arange(e - s) + st_idx, (3, e - s)))
        else:
            if types[s] == 1:
                (t, h, w), interval = grids_img[ii], 0.0
                ii += 1
            else:
                (t, h, w), interval = grids_vid[vi], float(secs[vi]) * tps
                vi += 1
            h, w = h // merge, w // merge
            t_index = (np.arange(t).reshape(-1, 1) * interval).astype(np.int64).reshape(-1)  # 4.49: expand * tps
            t_index = np.repeat(t_index, h * w)
            h_index = np.tile(np.repeat(np.arange(h), w), t)
            w_index = np.tile(np.arange(w), t * h)
            pieces.append(np.stack([t_index, h_index, w_index]) + st_idx)
        s = e
    return np.concatenate(pieces, axis=1)


ROWS = [[("text", 3), ("video", (3, 4, 6)), ("text", 2), ("image", (1, 4, 4)), ("text", 4)],
        [("text", 2), ("image", (1, 2, 4)), ("text", 1), ("video", (4, 2, 2)), ("text", 3)]]


@pytest.mark.parametrize("advance", ["transformers", "qwen"])
@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_pipeline_positions_equal_model_positions_equal_reference(family, advance):
    from converters.qwen_vl_config import from_hf_dict
    from stvl_jax.models.qwen_vl.host.positions import example_positions
    from stvl_jax.models.qwen_vl.inputs import rope_index

    hf = tiny_hf_config(family)
    config = from_hf_dict(hf.to_dict()).replace(video_position_advance=advance)
    batch = build_batch(hf, ROWS, seed=0, pad_side="left")
    if family == "qwen2_5_vl":
        batch["second_per_grid_ts"] = np.array([1.5, 0.5], np.float32)  # fractional intervals (tps 2)
    model_pos, _ = rope_index(config, batch)

    merge = config.vision.spatial_merge_size
    grids_img = batch["image_grid_thw"].tolist()
    grids_vid = batch["video_grid_thw"].tolist()
    for b, row in enumerate(ROWS):
        mask = batch["attention_mask"][b].astype(bool)
        types = batch["mm_token_type_ids"][b][mask]
        n_img = sum(kind == "image" for kind, _ in row)
        n_vid = sum(kind == "video" for kind, _ in row)
        i0 = sum(kind == "image" for r in ROWS[:b] for kind, _ in r)
        v0 = sum(kind == "video" for r in ROWS[:b] for kind, _ in r)
        secs = batch.get("second_per_grid_ts")
        pipe = example_positions(types, np.asarray(grids_img[i0:i0 + n_img]).reshape(-1, 3),
                                 np.asarray(grids_vid[v0:v0 + n_vid]).reshape(-1, 3),
                                 None if secs is None else secs[v0:v0 + n_vid], family=family, merge=merge,
                                 positions=config.positions)
        np.testing.assert_array_equal(pipe, model_pos[:, b, mask])
        if family == "qwen2_5_vl" and advance == "qwen":
            ref = _original_qwen25(types, grids_img[i0:i0 + n_img], grids_vid[v0:v0 + n_vid],
                                   secs[v0:v0 + n_vid], config.positions.tokens_per_second, merge)
            np.testing.assert_array_equal(pipe, ref)
    if not (family == "qwen2_5_vl" and advance == "qwen"):  # transformers defines these
        from test_positions import hf_rope_index

        ref, _ = hf_rope_index(hf, batch)
        np.testing.assert_array_equal(model_pos, ref)
    if family == "qwen2_5_vl":  # the setting matters: the long video moves every later position
        other, _ = rope_index(config.replace(video_position_advance="qwen" if advance == "transformers"
                                             else "transformers"), batch)
        assert not np.array_equal(other, model_pos)
