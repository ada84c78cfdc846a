"""Tiny random models for the masklet generator's plumbing tests (built offline from configs)."""

import os
import sys

import pytest

# the tiny random transformers Sam2VideoModel of the SAM2 video tests (weights redrawn: varied object scores)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "models", "sam2_video"))

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "the", "circle", "square", "triangle", "diamond",
         "star", "red", "green", "blue", "yellow", "white", "magenta", "cyan", "orange", "person"]


@pytest.fixture(scope="session")
def hf_sam2_dir(tmp_path_factory):
    pytest.importorskip("torch")
    from video_helpers import torch_video_model

    d = str(tmp_path_factory.mktemp("hf_sam2"))
    torch_video_model().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def gdino_dir(tmp_path_factory):
    """A tiny random GroundingDINO (2 decoder layers) with a BERT word-piece vocabulary of the synthetic words,
    saved with its processor (the PIL image processor)."""
    torch = pytest.importorskip("torch")
    from transformers import (BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoProcessor)
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil)

    d = tmp_path_factory.mktemp("gdino")
    (d / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    proc = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(
        size={"shortest_edge": 64, "longest_edge": 96}), tokenizer=BertTokenizer(str(d / "vocab.txt")))
    cfg = GroundingDinoConfig(
        backbone_config=dict(model_type="swin", embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                             window_size=4, image_size=64, out_features=["stage2", "stage3", "stage4"]),
        text_config=dict(model_type="bert", vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=3, num_feature_levels=3, encoder_n_points=2,
        decoder_n_points=2, max_text_len=32)
    torch.manual_seed(0)
    out = str(d / "model")
    GroundingDinoForObjectDetection(cfg).eval().save_pretrained(out)
    proc.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def owlv2_dir(tmp_path_factory):
    """A tiny random OWLv2 with a character-level CLIP BPE vocabulary (no merges), saved with its processor."""
    import json
    import string

    torch = pytest.importorskip("torch")
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil

    d = tmp_path_factory.mktemp("owlv2")
    # OWLv2 masks a query whose first id is 0: the start token must not be id 0 (CLIP's is 49406)
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=16)
    proc = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok)
    cfg = Owlv2Config(text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=16,
                                       num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=0),
                      vision_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    out = str(d / "model")
    Owlv2ForObjectDetection(cfg).eval().save_pretrained(out)
    proc.save_pretrained(out)
    return out
