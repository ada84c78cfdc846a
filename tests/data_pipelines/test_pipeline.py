"""Grain pipeline: batch contract, position ids vs transformers, labels, padding, checkpoint restore,
sharding, ArrayRecord, and the bad-input corpus."""

import json
import os
import types

import numpy as np
import pytest

from data_pipelines.grain import PipelineConfig, make_pipeline
from qwen_vl_helpers import per_frame_preprocessing, pipeline_kwargs
from data_pipelines.tokenizer import TINY_TOKEN_IDS



def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)

Q3 = per_frame_preprocessing("qwen3_vl")
Q25 = per_frame_preprocessing("qwen2_5_vl", max_pixels=112 * 112)


def cfg(index, tok, **kw):
    base = dict(index=index, tokenizer=tok, batch_size=2, shard="none", shuffle=False, max_frames=8)
    return PipelineConfig(**pipeline_kwargs(**{**base, **kw}))


def hf_positions(batch, family):
    torch = pytest.importorskip("torch")
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel as M

        conf = Qwen3VLConfig()
    else:
        from transformers import Qwen2_5_VLConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel as M

        conf = Qwen2_5_VLConfig()
        conf.vision_config.tokens_per_second = 2
    fake = types.SimpleNamespace(config=conf,
                                 get_vision_position_ids=lambda *a, **k: M.get_vision_position_ids(None, *a, **k))

    def t(k):
        return torch.from_numpy(np.asarray(batch[k]).astype(np.int64)) if len(batch.get(k, [])) else None

    kw = dict(input_ids=t("input_ids"), mm_token_type_ids=t("mm_token_type_ids"), image_grid_thw=t("image_grid_thw"),
              video_grid_thw=t("video_grid_thw"), attention_mask=t("attention_mask"))
    if family == "qwen2_5_vl":
        secs = batch["second_per_grid_ts"]
        kw["second_per_grid_ts"] = torch.from_numpy(secs) if len(secs) else None
    pos, _ = M.get_rope_index(fake, **kw)
    return pos.numpy()


def lead_positions(batch, family):
    from stvl_jax.models.qwen_vl.host.positions import get_rope_index

    return get_rope_index(batch["input_ids"], image_grid_thw=batch["image_grid_thw"],
                          video_grid_thw=batch["video_grid_thw"], attention_mask=batch["attention_mask"],
                          mm_token_type_ids=batch["mm_token_type_ids"],
                          second_per_grid_ts=batch.get("second_per_grid_ts"), family=family,
                          image_token_id=TINY_TOKEN_IDS["<|image_pad|>"],
                          video_token_id=TINY_TOKEN_IDS["<|video_pad|>"])[0]


CASES = [("chat", "captions/train.jsonl", Q3), ("chat", "captions/train.jsonl", Q25),
         ("streamo", "streamo/stream_train.jsonl", Q25), ("streamo", "streamo/stream_train.jsonl", Q3),
         ("stride", "stride/train.jsonl", Q3), ("chat", "qvhighlights/yesno_train.jsonl", Q3)]


@pytest.mark.torch
@pytest.mark.parametrize("fmt,index,vision", CASES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_batch_contract_and_positions_equal_transformers(synth_dir, tiny_tokenizer, fmt, index, vision, side):
    c = cfg(os.path.join(synth_dir, index), tiny_tokenizer, format=fmt, vision=vision, padding_side=side)
    b = next(make_pipeline(c))
    B, L = b["input_ids"].shape
    assert B == 2 and L in c.length_buckets
    for k in ("attention_mask", "labels", "loss_weights", "mm_token_type_ids"):
        assert b[k].shape == (B, L), k
    assert b["position_ids"].shape == (3, B, L) and b["position_ids"].dtype == np.int32
    assert b["input_ids"].dtype == np.int32 and b["loss_weights"].dtype == np.float32
    pv, grid = ("pixel_values_videos", "video_grid_thw") if fmt != "streamo" else ("pixel_values", "image_grid_thw")
    D = 3 * 2 * vision.patch_size ** 2
    assert b[pv].dtype == np.float32 and b[pv].shape[1] == D and b[pv].shape[0] == b[grid].prod(1).sum()
    n_pad = (b["mm_token_type_ids"] > 0).sum()
    assert n_pad == b[grid].prod(1).sum() // 4  # placeholder count == merged patches
    pad = b["attention_mask"] == 0
    assert (b["input_ids"][pad] == TINY_TOKEN_IDS["<|endoftext|>"]).all() and (b["labels"][pad] == -100).all()
    if side == "left":
        assert (b["attention_mask"][:, -1] == 1).all()
    else:
        assert (b["attention_mask"][:, 0] == 1).all()
    np.testing.assert_array_equal(b["position_ids"], hf_positions(b, vision.family))
    np.testing.assert_array_equal(b["position_ids"], lead_positions(b, vision.family))
    if vision.family == "qwen2_5_vl" and fmt == "chat":
        np.testing.assert_allclose(b["second_per_grid_ts"], 2 / c.preprocess.frames.fps)


def test_labels_cover_assistant_turns_only(synth_dir, tiny_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    b = next(make_pipeline(cfg(os.path.join(synth_dir, "streamo/stream_train.jsonl"), tiny_tokenizer,
                               format="streamo", vision=Q25)))
    ids, lab = b["input_ids"][0], b["labels"][0]
    text = tok.decode(ids[lab != -100])
    n_turns = (ids == TINY_TOKEN_IDS["<|im_start|>"]).sum() // 2  # system + (user, assistant) * n
    assert text.count("<|im_end|>") == n_turns
    assert "<|image_pad|>" not in text and "<|im_start|>" not in text
    states = sum(text.count(s) for s in ("</Silence>", "</Standby>", "</Response>"))
    assert states == n_turns
    assert (b["loss_weights"][0] == (lab != -100)).all()
    full = tok.decode(ids[b["attention_mask"][0] == 1])
    assert "<0s-1s>\n<|vision_start|><|image_pad|>" in full and "<1s-2s>" in full


def test_qwen3_video_has_one_timestamped_block_per_frame_group(synth_dir, tiny_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    b = next(make_pipeline(cfg(os.path.join(synth_dir, "captions/train.jsonl"), tiny_tokenizer, vision=Q3,
                               video_fps=2.0, max_frames=64)))
    text = tok.decode(b["input_ids"][0])
    t = b["video_grid_thw"][0][0]
    assert text.count("<|vision_start|>") == t
    assert "<0.2 seconds><|vision_start|>" in text and "<1.2 seconds><|vision_start|>" in text  # (0+0.5)/2, (1+1.5)/2


def test_stride_activation_labels(synth_dir, tiny_tokenizer):
    c = cfg(os.path.join(synth_dir, "stride/train.jsonl"), tiny_tokenizer, format="stride", vision=Q3)
    b = next(make_pipeline(c))
    ids, al = b["input_ids"], b["activation_labels"]
    assert (b["labels"] == -100).all()
    for r in range(2):
        slots = np.flatnonzero(np.isin(ids[r], [10, 11, 12]))
        assert len(slots) == 2 * c.stride.window
        first, second = slots[: c.stride.window], slots[c.stride.window:]
        assert (ids[r][first] == ids[r][second]).all()
        assert (al[r][first] == -100).all()
        masked = second[ids[r][second] == TINY_TOKEN_IDS["<activation>"]]
        assert set(np.flatnonzero(al[r] != -100)) == set(masked)
        assert set(np.unique(al[r][masked])) <= {0, 1}


def _batches(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("workers", [0, 2])
def test_restart_from_saved_state_reproduces_following_batches(synth_dir, tiny_tokenizer, workers):
    c = cfg(os.path.join(synth_dir, "stride/train.jsonl"), tiny_tokenizer, format="stride", vision=Q3,
            shuffle=True, seed=5, num_epochs=None, worker_count=workers)
    it = make_pipeline(c)
    _batches(it, 2)
    state = json.dumps(it.get_state())  # what the trainer's checkpoint stores
    expected = _batches(it, 3)
    again = make_pipeline(c)
    again.set_state(json.loads(state))
    for a, b in zip(expected, _batches(again, 3)):
        _same(a, b)  # includes the STRIDE masks (random per record)


def test_shards_are_disjoint_and_cover(synth_dir, tiny_tokenizer):
    from data_pipelines.grain.pipeline import build_example_dataset

    idx = os.path.join(synth_dir, "captions/train.jsonl")
    seen = []
    for s in ("0/2", "1/2"):
        examples = build_example_dataset(cfg(idx, tiny_tokenizer, shard=s, max_frames=2))
        seen.append({tuple(ex["input_ids"][-40:]) for ex in examples})
    n = sum(1 for _ in open(idx))
    assert not seen[0] & seen[1] and len(seen[0]) + len(seen[1]) == n
    from data_pipelines.grain.pipeline import _shard_options

    opts = _shard_options(cfg(idx, tiny_tokenizer, shard="jax_process"))
    assert (opts.shard_index, opts.shard_count) == (0, 1)


def test_array_record_index_gives_the_same_batches(synth_dir, tiny_tokenizer, tmp_path):
    from data_pipelines.grain.sources import jsonl_to_array_record

    src = os.path.join(synth_dir, "captions/train.jsonl")
    ar = str(tmp_path / "captions.array_record")
    assert jsonl_to_array_record(src, ar) == sum(1 for _ in open(src))
    a = next(make_pipeline(cfg(src, tiny_tokenizer, max_frames=4)))
    b = next(make_pipeline(cfg(ar, tiny_tokenizer, max_frames=4, media_root=os.path.dirname(src))))
    _same(a, b)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_input_corpus_is_counted_not_fatal(synth_dir, tiny_tokenizer, bad_videos, tmp_path, workers):
    good = json.loads(open(os.path.join(synth_dir, "captions/train.jsonl")).readline())
    vpath = os.path.join(synth_dir, "videos", "synth_00000.mp4")

    def chat(path, **video):
        return {"messages": [{"role": "user", "content": [{"type": "video", "path": path, **video},
                                                          {"type": "text", "text": "Describe."}]},
                             {"role": "assistant", "content": "A red circle."}]}

    rows = [
        chat(vpath), chat(bad_videos["truncated"]), chat(bad_videos["zero"]), chat(bad_videos["text"]),
        chat(bad_videos["missing"]), '{"messages": [ broken json', chat(vpath, start=-2.0),
        chat(vpath, start=500.0), chat(vpath, end=float("nan")), {"no_messages": 1},
        {"messages": [{"role": "user", "content": "only a question"}]}, good, chat(vpath, fps=1.0),
    ]
    idx = write_jsonl(tmp_path / "bad.jsonl", rows)
    c = cfg(idx, tiny_tokenizer, batch_size=1, media_root=os.path.join(synth_dir, "captions"), drop_remainder=False,
            worker_count=workers)  # with workers, the skips travel with the batches (the last ones alone)
    it = make_pipeline(c)
    batches = list(it)
    assert len(batches) == 3  # the three good records
    assert it.stats["skipped"] == {"bad_json": 1, "bad_video": 3, "nan_time": 1, "missing_field": 2,
                                   "missing_file": 1, "negative_time": 1, "time_out_of_range": 1}
    assert "truncated.mp4" in " ".join(it.skip_log) and "bad_video" in it.report()
    from data_pipelines.errors import VideoDecodeError

    strict = make_pipeline(PipelineConfig(**{**c.__dict__, "strict": True}))
    next(strict)
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        next(strict)


@pytest.mark.parametrize("workers", [0, 2])
def test_endless_stream_of_unusable_records_is_an_error_not_a_hang(bad_videos, tiny_tokenizer, tmp_path, workers):
    from data_pipelines.errors import AnnotationError

    rows = [{"messages": [{"role": "user", "content": [{"type": "video", "path": bad_videos[k]}]},
                          {"role": "assistant", "content": "x"}]} for k in ("missing", "zero", "text")]
    c = cfg(write_jsonl(tmp_path / "unusable.jsonl", rows), tiny_tokenizer, num_epochs=None, worker_count=workers)
    with pytest.raises(AnnotationError, match="every record of .*unusable.jsonl.* was skipped") as e:
        next(make_pipeline(c))
    assert "missing_file" in str(e.value) and "bad_video" in str(e.value)


def test_config_refuses_unknown_keys(tiny_tokenizer):
    from stvl_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="bogus"):
        PipelineConfig.from_dict({"index": "x.jsonl", "tokenizer": tiny_tokenizer, "bogus": 1})
    with pytest.raises(ConfigError, match="patch_sise"):
        PipelineConfig.from_dict({"index": "x.jsonl", "tokenizer": "t", "preprocess": {"patch_sise": 14}})
    with pytest.raises(ConfigError, match="max_pixel"):
        PipelineConfig.from_dict({"index": "x.jsonl", "tokenizer": "t", "preprocess": {"image": {"max_pixel": 9}}})
    c = PipelineConfig.from_dict({"index": "x.jsonl", "tokenizer": "t", "length_buckets": [64, 128],
                                  "preprocess": {"family": "qwen2_5_vl", "image": {"max_pixels": 3136}}})
    # the keys given are merged into the family default
    assert c.length_buckets == (64, 128) and c.preprocess.patch_size == 14 and c.preprocess.image.max_pixels == 3136
    assert c.preprocess.image_mean == (0.48145466, 0.4578275, 0.40821073)


def test_patch_buckets_pad_rows_and_report_valid_count(synth_dir, tiny_tokenizer):
    c = cfg(os.path.join(synth_dir, "captions/train.jsonl"), tiny_tokenizer, vision=Q3, patch_buckets=(1024, 4096))
    b = next(make_pipeline(c))
    n = int(b["num_valid_video_patches"])
    assert n == b["video_grid_thw"].prod(1).sum() and len(b["pixel_values_videos"]) in (1024, 4096)
    assert (b["pixel_values_videos"][n:] == 0).all()


def test_streamo_state_noise_replaces_context_states_and_keeps_labels(synth_dir, tiny_tokenizer):
    from data_pipelines.formats.streamo import STATE_TOKENS
    from stvl_jax.errors import ConfigError

    index = os.path.join(synth_dir, "streamo/stream_train.jsonl")
    clean, noisy, half = (next(make_pipeline(cfg(index, tiny_tokenizer, format="streamo", vision=Q25,
                                                 streamo_state_noise=p))) for p in (0.0, 1.0, 0.5))
    for k in clean:
        if k != "input_ids":
            np.testing.assert_array_equal(noisy[k], clean[k], err_msg=k)
    ids, lab = clean["input_ids"], clean["labels"]
    states = [TINY_TOKEN_IDS[s] for s in STATE_TOKENS]
    alone = np.isin(lab, states) & (np.roll(ids, -1, axis=1) == TINY_TOKEN_IDS["<|im_end|>"])
    assert (np.isin(lab, states) & ~alone).any()  # a response with its answer text: left as it is
    changed = noisy["input_ids"] != ids
    np.testing.assert_array_equal(changed, alone)  # p = 1: every state-only turn, nothing else
    assert np.isin(noisy["input_ids"][changed], states).all()
    assert 0 < (half["input_ids"] != ids).sum() < alone.sum()
    with pytest.raises(ConfigError, match="streamo_state_noise"):
        cfg(index, tiny_tokenizer, format="streamo", streamo_state_noise=1.5)
