"""VIRST's config (strict, presets), [SEG] in the vocabulary, prompt templates, label masking, [SEG] positions and
the generating-mode hook. Expected values are written by hand from upstream utils/utils.py + utils/preprocess.py."""

import random

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stvl_jax.errors import ConfigError, InputError
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.qwen_vl.presets import load_model_config
from stvl_jax.models.virst.config import VirstConfig, load_virst_config
from stvl_jax.models.virst.host.prompts import IGNORE, answer, mask_labels, question_parts, seg_answer_span
from stvl_jax.models.virst.seg_tokens import (add_seg_token, gather_rows, scatter_rows, seg_hidden_states,
                                              seg_positions, teacher_forced_batch)


def test_defaults_are_virsts():  # the loss weights: tests/train/test_virst_loss.py
    c = VirstConfig(llm=load_model_config("qwen3vl_2b"))
    assert (c.seg.per_video, c.seg.per_image, c.seg.text) == (10, 1, "[SEG]")
    p = c.prompter
    assert (p.token_dim, p.num_heads, p.num_layers, p.ffn_dim, p.dropout, p.head_dim) == (256, 8, 2, 1024, 0.1, 32)
    assert (c.sam2_grid, c.memory_grid, c.sam2_width) == (64, 8, 256)  # SAM2 at 1024 px -> 8x8 memory
    assert not c.initial_fusion.enabled and c.initial_fusion.gate_init == 0.1 and c.initial_fusion.num_heads == 8
    assert c.anchors.max_seg_frames == 32


def test_strict_and_checked():
    llm = load_model_config("qwen3vl_tiny").to_dict()
    with pytest.raises(ConfigError, match="unknown key 'prompter.heads'"):
        VirstConfig.from_dict({"llm": llm, "prompter": {"heads": 4}})
    with pytest.raises(ConfigError, match="SAM2's prompt width 256"):
        VirstConfig.from_dict({"llm": llm, "prompter": {"token_dim": 128, "num_heads": 4}})
    with pytest.raises(ConfigError, match="does not halve 7 times"):
        VirstConfig.from_dict({"llm": llm, "prompter": {"down_layers": 7}})
    with pytest.raises(ConfigError, match="outside the LLM vocabulary"):
        VirstConfig.from_dict({"llm": llm, "seg": {"token_id": 512}})


def test_tiny_preset_and_overrides():
    c = load_virst_config("virst_tiny", ["prompter.dropout=0.0"])
    assert c.llm.family == "qwen3_vl" and c.llm.text.vocab_size == 513 and c.seg.token_id == 512
    assert c.sam2.image.image_size == 128 and c.memory_grid == 4 and c.prompter.head_dim == 32
    assert c.prompter.dropout == 0.0
    with pytest.raises(ConfigError, match="unknown key 'seg.count'"):
        load_virst_config("virst_tiny", ["seg.count=3"])


def test_templates():
    assert seg_answer_span(3) == "(0) [SEG], (1) [SEG], (2) [SEG]"
    rng = random.Random(0)
    a = answer(10, rng=rng)
    assert a.count("[SEG]") == 10 and a.endswith("(9) [SEG].")
    span = seg_answer_span(10)
    assert a in {f"It is {span}.", f"Sure, {span}.", f"Sure, it is {span}.",
                 f"Sure, the segmentation result is {span}."}
    before, after = question_parts("the red circle", rng=random.Random(1))
    assert before == "Reference Video: "
    assert after in {" \nWhat is the red circle in the Reference Video? Please respond with segmentation mask in "
                     "the Target Image.",
                     " \nWhat is the red circle in the Reference Video? Please output segmentation mask in the "
                     "Target Image.",
                     " \nPlease find the red circle in the Reference Video and segment it in the Target Image."}
    _, long_q = question_parts("which one stops first?", modality="Image", rng=random.Random(0))
    assert long_q.startswith(" \nwhich one stops first? Please find it in the Reference Image and ")


def test_label_masking():
    ids = np.array([[1, 20, 21, 2, 1, 30, 99, 31, 99, 2]])
    assistant = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]], bool)
    assert mask_labels(ids, assistant, 99).tolist() == [[IGNORE] * 4 + [1, 30, IGNORE, 31, IGNORE, 2]]
    # upstream also keeps <|im_start|> / <|im_end|> / "\n" everywhere
    assert mask_labels(ids, assistant, 99, keep_token_ids=(1, 2)).tolist() == [
        [1, IGNORE, IGNORE, 2, 1, 30, IGNORE, 31, IGNORE, 2]]


def test_seg_positions_gather_scatter():
    ids = jnp.asarray([[5, 9, 5, 9, 9, 5], [9, 5, 5, 5, 5, 5]])
    pos, valid = seg_positions(ids, 9, 3)
    assert np.asarray(pos).tolist() == [[1, 3, 4], [0, 0, 0]]
    assert np.asarray(valid).tolist() == [[True, True, True], [True, False, False]]
    x = jnp.arange(2 * 6 * 2, dtype=jnp.float32).reshape(2, 6, 2)
    assert np.asarray(gather_rows(x, pos))[0, :, 0].tolist() == [2.0, 6.0, 8.0]
    y = scatter_rows(x, pos, -jnp.ones((2, 3, 2)), valid)
    want = np.asarray(x).copy()
    want[0, [1, 3, 4]] = -1
    want[1, 0] = -1
    np.testing.assert_array_equal(np.asarray(y), want)
    cfg = load_virst_config("virst_tiny")
    with pytest.raises(InputError, match="no seg.token_id"):
        seg_hidden_states(x, ids, cfg.replace(seg={"token_id": None}), 3)


def test_teacher_forced_batch():
    batch = {"input_ids": np.array([[0, 0, 7, 8], [7, 8, 9, 4]]), "attention_mask": np.array([[0, 0, 1, 1], [1] * 4]),
             "position_ids": np.zeros((3, 2, 4))}
    out = teacher_forced_batch(batch, np.array([[99, 2, 5], [99, 99, 99]]), eos_token_ids=(2,))
    assert out["input_ids"].tolist() == [[7, 8, 99, 2, 0, 0, 0], [7, 8, 9, 4, 99, 99, 99]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]
    assert "position_ids" not in out
    with pytest.raises(InputError, match="generated ids"):
        teacher_forced_batch(batch, np.array([1, 2]), eos_token_ids=(2,))


def test_add_seg_token_to_tiny_tokenizer_and_model(tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from data_pipelines.tokenizer import build_tiny_tokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(str(tmp_path / "tok")))
    lm = QwenVLForConditionalGeneration(load_model_config("qwen3vl_tiny"), rngs=nnx.Rngs(0))
    old = np.asarray(lm.language_model.embed_tokens.embedding[...])
    lm, tid = add_seg_token(lm, tok)
    assert tid == 512 == load_virst_config("virst_tiny").seg.token_id  # the tiny preset's id
    assert tok.tokenize("(0) [SEG],").count("[SEG]") == 1
    new = np.asarray(lm.language_model.embed_tokens.embedding[...])
    assert new.shape == (513, 128)
    np.testing.assert_array_equal(new[:512], old)
    np.testing.assert_allclose(new[512], old.mean(0), rtol=1e-5, atol=1e-7)  # resize_vocab's new-row rule


def test_every_parameter_has_logical_axes_that_shard():
    from stvl_jax.models.virst.model import abstract_virst_model
    from stvl_jax.sharding import describe_shardings, make_mesh
    from stvl_jax.nn.params import flat_params

    model = abstract_virst_model(load_virst_config("virst_tiny").replace(initial_fusion={"enabled": True,
                                                                                           "num_heads": 4}))
    params = flat_params(model)
    missing = [k for k, v in params.items() if v.get_metadata().get("logical_axes") is None]
    assert not missing
    assert any(k.startswith("initial_fusion/") for k in params) and any(k.startswith("sam2/") for k in params)
    report = describe_shardings(nnx.state(model, nnx.Param), make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
    assert report is not None


def test_prompter_refuses_bad_frames():
    from stvl_jax.models.virst.seg_prompter import SegPrompter

    cfg = load_virst_config("virst_tiny", ["prompter.max_frames=4"])
    p = SegPrompter(cfg, rngs=nnx.Rngs(0))
    with pytest.raises(InputError, match="exceed prompter.max_frames 4"):
        p(jnp.zeros((1, 2, 128)), jnp.zeros((5, 8, 8, 128)))
    with pytest.raises(InputError, match=r"expected \(T, 8, 8, 128\)"):
        p(jnp.zeros((1, 2, 128)), jnp.zeros((2, 16, 16, 128)))
