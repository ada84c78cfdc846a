"""The Strefer engine's `stvl` annotator backend: prompts reach the JAX Qwen-VL as a well-formed video chat, its
reply is decoded up to <|im_end|>, and an untrained model's reply is a counted malformed-output skip."""

import numpy as np
import pytest
from flax import nnx

from qwen_vl_helpers import per_frame_preprocessing

CLIP = {"clip_id": "v/s000c000", "start": 0.0, "end": 4.0}
FRAMES = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
TIMES = np.arange(6) * 0.5


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    from transformers import AutoTokenizer

    from data_pipelines.tokenizer import build_tiny_tokenizer
    from stvl_jax.infer.strefer_chat import StvlChat
    from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
    from stvl_jax.models.qwen_vl.presets import load_model_config

    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(str(tmp_path_factory.mktemp("tok"))))
    model = QwenVLForConditionalGeneration(load_model_config("qwen25vl_tiny"), rngs=nnx.Rngs(0))
    vision = per_frame_preprocessing("qwen2_5_vl", max_pixels=32 * 32)
    return StvlChat(model, tok, max_new_tokens=6, vision=vision)


def test_factory_loads_a_checkpoint_once_per_worker(chat, tmp_path, monkeypatch):
    """What `stvl data strefer --annotator stvl --checkpoint DIR --tokenizer TOK` hands Beam: picklable, loads in
    the worker's setup, answers with the checkpoint's preprocessing."""
    import pickle

    from stvl_jax.infer.strefer_chat import StvlChatFactory
    from stvl_jax.models.dispatch import save_model

    ckpt = save_model(chat.model, path=str(tmp_path / "ckpt"), preprocessing=chat.vision)
    chat.tok.save_pretrained(str(tmp_path / "tok"))
    factory = pickle.loads(pickle.dumps(StvlChatFactory(str(ckpt), str(tmp_path / "tok"), max_new_tokens=4)))
    loaded = factory()
    assert loaded.vision.to_dict() == chat.vision.to_dict() and loaded.max_new_tokens == 4
    monkeypatch.setattr("stvl_jax.models.qwen_vl.generate.generate",
                        lambda model, batch, **kw: np.asarray([chat.tok("[]", add_special_tokens=False)["input_ids"]]))
    assert loaded(FRAMES, TIMES, "List every active entity") == "[]"


def test_prompt_batch_and_decoding(chat, monkeypatch):
    from data_pipelines.tokenizer import TINY_TOKEN_IDS

    seen = []
    reply = chat.tok('["the red circle"]', add_special_tokens=False)["input_ids"]

    def scripted(model, batch, *, max_new_tokens, eos_token_id, **kw):
        seen.append((batch, eos_token_id))
        return np.asarray([reply + [TINY_TOKEN_IDS["<|im_end|>"], 5, 6]])

    monkeypatch.setattr("stvl_jax.models.qwen_vl.generate.generate", scripted)
    assert chat(FRAMES, TIMES, "List every active entity") == '["the red circle"]'
    batch, eos = seen[0]
    text = chat.tok.decode(batch["input_ids"][0])
    assert "<|vision_start|>" in text and text.endswith("List every active entity<|im_end|>\n<|im_start|>assistant\n")
    assert int(batch["video_grid_thw"][0, 0]) == 3  # 6 frames / temporal patch 2
    assert TINY_TOKEN_IDS["<|im_end|>"] in eos
    assert chat(None, None, "nouns please") == '["the red circle"]'  # text-only step (noun generalization)
    assert "pixel_values_videos" not in seen[1][0]


def test_untrained_model_reply_is_a_counted_skip(chat):
    from data_pipelines.errors import AnnotationError
    from data_pipelines.strefer.annotators import ChatAnnotator
    from data_pipelines.strefer.config import AnnotatorConfig

    a = ChatAnnotator("stvl", lambda: chat, AnnotatorConfig(name="stvl", checkpoint="unused", tries=1, num_frames=4))
    a.setup()
    with pytest.raises(AnnotationError, match="malformed_model_output"):  # random weights: no JSON list
        a.annotate(CLIP, FRAMES, TIMES)
