"""The pipeline's fast paths equal the reference computations: cached M-RoPE positions vs the model's
get_rope_index, compact-placeholder tokenization vs tokenizing the expanded text, uint8 rows vs the float32
rows, channels-last rows vs the HF-layout rows, the per-epoch shuffle, in-worker batching vs in-process, and the
shared-memory ring's lifecycle."""

import os

import numpy as np
import pytest

from data_pipelines.grain import PipelineConfig, make_pipeline
from qwen_vl_helpers import per_frame_preprocessing, pipeline_kwargs


def cfg(index, tok, **kw):
    base = dict(index=index, tokenizer=tok, batch_size=2, shard="none", shuffle=False, max_frames=8)
    return PipelineConfig(**pipeline_kwargs(**{**base, **kw}))


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_example_positions_equal_get_rope_index(family):
    from stvl_jax.models.qwen_vl.host.positions import example_positions
    from stvl_jax.models.qwen_vl.host.positions import get_rope_index, split_video_grids_per_frame_group

    rng = np.random.default_rng(0)
    for _ in range(200):
        types, images, videos = [], [], []
        for _ in range(rng.integers(0, 6)):
            types += [0] * int(rng.integers(1, 5))
            t, h, w = int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4))
            if rng.random() < 0.5:
                images.append((1, h, w))
                types += [1] * (h * w // 4)
            else:
                videos.append((t, h, w))
                if family == "qwen3_vl":  # one run per temporal group, text in between
                    for g in range(t):
                        types += [2] * (h * w // 4) + [0] * int(rng.integers(1, 3))
                else:
                    types += [2] * (t * h * w // 4)
        types += [0] * int(rng.integers(1, 4))
        types = np.asarray(types, np.int32)
        img = np.asarray(images, np.int64).reshape(-1, 3)
        vid = np.asarray(videos, np.int64).reshape(-1, 3)
        secs = rng.choice([0.5, 1.0, 2 / 3], len(vid)).astype(np.float32) if family == "qwen2_5_vl" else None
        ref, _ = get_rope_index(types[None], image_grid_thw=img if len(img) else None,
                                video_grid_thw=vid if len(vid) else None, mm_token_type_ids=types[None],
                                second_per_grid_ts=secs if len(vid) else None, family=family, tokens_per_second=2)
        got = example_positions(types, img, vid, secs, family=family, merge=2)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, ref[:, 0])
    assert len(split_video_grids_per_frame_group(np.array([[3, 2, 2]]))) == 3
    with pytest.raises(ValueError, match="grid"):
        example_positions(np.array([0, 1, 1]), np.array([[1, 2, 2]]), np.zeros((0, 3)), family=family, merge=2)


@pytest.mark.parametrize("fmt,index,vision", [
    ("chat", "captions/train.jsonl", per_frame_preprocessing("qwen3_vl")),
    ("streamo", "streamo/stream_train.jsonl", per_frame_preprocessing("qwen2_5_vl",
                                                  max_pixels=112 * 112)),
                                              ("stride", "stride/train.jsonl", per_frame_preprocessing("qwen3_vl"))])
def test_compact_tokenization_equals_tokenizing_the_expanded_text(synth_dir, tiny_tokenizer, fmt, index, vision):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    b = next(make_pipeline(cfg(os.path.join(synth_dir, index), tiny_tokenizer, format=fmt, vision=vision)))
    for ids, mask in zip(b["input_ids"], b["attention_mask"]):
        ids = ids[mask == 1]
        text = tok.decode(ids)  # the expanded text: every pad token spelled out
        assert text.count("_pad|>") > 10
        np.testing.assert_array_equal(tok(text, add_special_tokens=False)["input_ids"], ids)


def test_record_text_with_pad_tokens_is_a_counted_skip(synth_dir, tiny_tokenizer, tmp_path):
    import json

    rec = json.loads(open(os.path.join(synth_dir, "captions/train.jsonl")).readline())
    rec["messages"][1]["content"] = "sneaky <|video_pad|> token"
    idx = tmp_path / "pad.jsonl"
    idx.write_text(json.dumps(rec) + "\n")
    c = cfg(str(idx), tiny_tokenizer, batch_size=1, drop_remainder=False,
            media_root=os.path.join(synth_dir, "captions"))
    it = make_pipeline(c)
    assert list(it) == [] and it.stats["skipped"] == {"bad_field": 1}


def test_uint8_pixel_rows_normalize_to_the_float32_rows(synth_dir, tiny_tokenizer):
    from stvl_jax.models.qwen_vl.host.preprocess import normalize_rows

    q25 = per_frame_preprocessing("qwen2_5_vl", max_pixels=112 * 112)
    for fmt, index, vision in (("chat", "captions/train.jsonl", per_frame_preprocessing("qwen3_vl")),
                               ("streamo", "streamo/stream_train.jsonl", q25)):
        c = cfg(os.path.join(synth_dir, index), tiny_tokenizer, format=fmt, vision=vision)
        f32 = next(make_pipeline(c))
        u8 = next(make_pipeline(PipelineConfig(**{**c.__dict__, "pixel_dtype": "uint8"})))
        for key in ("pixel_values", "pixel_values_videos"):
            assert u8[key].dtype == np.uint8 and f32[key].dtype == np.float32
            np.testing.assert_array_equal(normalize_rows(u8[key], vision), f32[key])  # bit-identical
        for key in set(f32) - {"pixel_values", "pixel_values_videos"}:
            np.testing.assert_array_equal(u8[key], f32[key], err_msg=key)


def test_channels_last_rows_are_the_uint8_rows_permuted(synth_dir, tiny_tokenizer):
    q25 = per_frame_preprocessing("qwen2_5_vl", max_pixels=112 * 112)
    for fmt, index, vision in (("chat", "captions/train.jsonl", per_frame_preprocessing("qwen3_vl")),
                               ("streamo", "streamo/stream_train.jsonl", q25)):
        c = cfg(os.path.join(synth_dir, index), tiny_tokenizer, format=fmt, vision=vision, pixel_dtype="uint8",
                patch_buckets=(4096, 65536))
        hf = next(make_pipeline(c))
        cl = next(make_pipeline(PipelineConfig(**{**c.__dict__, "pixel_layout": "channels_last"})))
        tpp = vision.temporal_patch_size * vision.patch_size ** 2
        for key in ("pixel_values", "pixel_values_videos"):
            assert cl[key].dtype == np.uint8 and cl[key].shape == (len(hf[key]), tpp, 3)
            np.testing.assert_array_equal(cl[key].transpose(0, 2, 1).reshape(hf[key].shape), hf[key])
        for key in set(hf) - {"pixel_values", "pixel_values_videos"}:
            np.testing.assert_array_equal(cl[key], hf[key], err_msg=key)


def test_frames_layout_gathers_into_the_channels_last_rows(synth_dir, tiny_tokenizer):
    """pixel_layout="frames": the batch holds the (resized) frames' bytes; gathering the patch rows from them as
    the model does on the device gives the channels-last batch's rows, and every other field is unchanged."""
    from stvl_jax.models.qwen_vl.vision import gather_frame_rows
    from stvl_jax.models.qwen_vl.vision_inputs import frame_offsets

    q25 = per_frame_preprocessing("qwen2_5_vl", max_pixels=112 * 112)  # 128 px frames resized to 112
    for fmt, index, vision in (("chat", "captions/train.jsonl", per_frame_preprocessing("qwen3_vl")),
                               ("streamo", "streamo/stream_train.jsonl", q25)):
        c = cfg(os.path.join(synth_dir, index), tiny_tokenizer, format=fmt, vision=vision, pixel_dtype="uint8",
                pixel_layout="channels_last")
        cl = next(make_pipeline(c))
        fr = next(make_pipeline(PipelineConfig(**{**c.__dict__, "pixel_layout": "frames"})))
        for key, grid_key, per_group in (("pixel_values", "image_grid_thw", 1),
                                         ("pixel_values_videos", "video_grid_thw", vision.temporal_patch_size)):
            grid = fr[grid_key]
            assert fr[key].dtype == np.uint8 and fr[key].ndim == 1
            offsets, strides, nbytes = frame_offsets(grid, np.full(len(grid), per_group), vision.patch_size,
                                                     vision.temporal_patch_size, vision.merge_size)
            assert len(fr[key]) == nbytes and len(cl[key]) == len(offsets)
            if len(grid):
                rows = gather_frame_rows(fr[key], offsets.astype(np.int32), strides.astype(np.int32),
                                         vision.patch_size, 3)
                np.testing.assert_array_equal(np.asarray(rows), cl[key], err_msg=f"{fmt} {key}")
        assert len(fr["image_grid_thw"]) + len(fr["video_grid_thw"]) > 0
        for key in set(cl) - {"pixel_values", "pixel_values_videos"}:
            np.testing.assert_array_equal(fr[key], cl[key], err_msg=key)


def test_pixel_dtype_and_layout_are_validated(tiny_tokenizer):
    from stvl_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="pixel_dtype"):
        PipelineConfig(index="x.jsonl", tokenizer=tiny_tokenizer, pixel_dtype="float16")
    with pytest.raises(ConfigError, match="pixel_layout"):
        PipelineConfig(index="x.jsonl", tokenizer=tiny_tokenizer, pixel_dtype="uint8", pixel_layout="nhwc")
    for layout in ("channels_last", "frames"):
        with pytest.raises(ConfigError, match="needs pixel_dtype='uint8'"):
            PipelineConfig(index="x.jsonl", tokenizer=tiny_tokenizer, pixel_layout=layout)
    with pytest.raises(ConfigError, match="patch_buckets"):
        PipelineConfig(index="x.jsonl", tokenizer=tiny_tokenizer, pixel_dtype="uint8", pixel_layout="frames",
                       patch_buckets=(4096,))


def test_epoch_shuffle_is_a_fresh_deterministic_permutation_per_epoch():
    import grain

    from data_pipelines.grain.pipeline import _EpochShuffle

    ds = _EpochShuffle(grain.MapDataset.range(20), seed=3).repeat(3)
    out = np.asarray(list(ds)).reshape(3, 20)
    assert all(sorted(e) == list(range(20)) for e in out)
    assert not (out[0] == out[1]).all() and not (out[0] == np.arange(20)).all()
    np.testing.assert_array_equal(out, np.asarray(list(_EpochShuffle(grain.MapDataset.range(20), seed=3).repeat(3)))
                                  .reshape(3, 20))
    np.testing.assert_array_equal(np.asarray(list(ds[1::2])), out.ravel()[1::2])  # slicing (worker split) commutes


def test_worker_batches_hold_the_same_examples(synth_dir, tiny_tokenizer):
    """Workers batch their own slice of the records: other groupings, same examples, same totals."""
    c = cfg(os.path.join(synth_dir, "captions/train.jsonl"), tiny_tokenizer, max_frames=2, drop_remainder=False,
            pixel_dtype="uint8")
    seen = {}
    for workers in (0, 2):
        with make_pipeline(PipelineConfig(**{**c.__dict__, "worker_count": workers})) as it:
            batches = list(it)
            seen[workers] = sorted(tuple(ids[m == 1]) for b in batches for ids, m in zip(b["input_ids"],
                                                                                          b["attention_mask"]))
            assert it.stats["examples"] == len(seen[workers]) and it.stats["frames"] == 2 * len(seen[workers])
            assert all(b["pixel_values_videos"].dtype == np.uint8 and type(b["input_ids"]) is np.ndarray
                       for b in batches)
    assert seen[0] == seen[2] and len(seen[0]) == sum(1 for _ in open(c.index))


def _blocks():
    return set(os.listdir("/dev/shm"))


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory in /dev/shm")
def test_shm_ring_reuses_released_slots_and_cleans_up():
    from data_pipelines.grain import shm_ring

    before = _blocks()
    w, r = shm_ring.RingWriter(slots=2), shm_ring.RingReader()
    batch = {"a": np.arange(12, dtype=np.int32).reshape(3, 4), "b": np.zeros((0, 5), np.uint8), "n": np.int32(7)}
    refs = [w.put(batch), w.put(batch)]
    assert all(isinstance(x, shm_ring.RingRef) for x in refs) and refs[0].name != refs[1].name
    assert w.put(batch) is batch  # slot 0 not read yet: Grain's path
    out = r.read(refs[0])
    assert out.keys() == batch.keys() and out["n"] == 7 and out["b"].shape == (0, 5)
    np.testing.assert_array_equal(out["a"], batch["a"])
    a = out["a"][1:]  # a view of the slot, no copy
    del out
    assert w.put(batch) is batch  # slot 0 read, but part of that batch is still alive: not released
    np.testing.assert_array_equal(a, batch["a"][1:])
    del a
    again = w.put(batch)  # released with its last array: the same block is rewritten
    assert again.name == refs[0].name and again.seq == 3
    big = {"a": np.ones((3 << 20,), np.uint8)}
    r.read(refs[1])  # dropped at once: released
    grown = w.put(big)  # slot 1 grows: a new block, the old one unlinked
    assert grown.name != refs[1].name and refs[1].name not in _blocks()
    assert r.read(grown)["a"].sum() == 3 << 20
    w.reset()  # a restore: everything dropped, read or not
    assert not (_blocks() - before)
    # at the end of the data a worker leaves its unread blocks to the reader, which unlinks them
    last = w.put(batch)
    w.mark_exhausted()
    shm_ring._drop_all(w._blocks, w._state)  # what runs at worker exit
    assert last.name in _blocks()
    kept = r.read(last)
    np.testing.assert_array_equal(kept["a"], batch["a"])
    assert last.name in _blocks()  # unlinked only once the batch read from it is freed
    del kept
    assert last.name not in _blocks()
    r.close()
    # without the end of the data (the iterator was closed), exiting unlinks unread blocks too
    w2 = shm_ring.RingWriter(slots=1)
    w2.put(batch)
    shm_ring._drop_all(w2._blocks, w2._state)
    assert not (_blocks() - before)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="POSIX shared memory in /dev/shm")
def test_shm_ring_release_inside_the_readers_lock_does_not_deadlock():
    """A batch in a reference cycle is freed by the GC wherever it runs, possibly while this thread holds the
    reader's lock (inside `read`): the release must not wait for that lock."""
    import gc
    import threading

    from data_pipelines.grain import shm_ring

    w, r = shm_ring.RingWriter(slots=1), shm_ring.RingReader()
    batch = {"a": np.arange(6, dtype=np.int32)}
    cycle = [r.read(w.put(batch))]
    cycle.append(cycle)

    def free_under_lock():
        nonlocal cycle
        with r._lock:
            del cycle
            gc.collect()  # the finalizer runs here, in this thread

    t = threading.Thread(target=free_under_lock, daemon=True)
    t.start()
    t.join(timeout=20)
    assert not t.is_alive(), "release deadlocked on the reader's lock"
    assert isinstance(w.put(batch), shm_ring.RingRef)  # the slot was released
    r.close()
    w.reset()
