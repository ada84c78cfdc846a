"""VIRST's conversation text and loss labels (upstream utils/utils.py and utils/preprocess.py), numpy only.

    question: "Reference Video: <video> \\nWhat is {sent} in the Reference Video? Please respond with
               segmentation mask in the Target Image."   (3 short templates; 2 long ones when the expression
               ends with "?"; {modality} = "Video" / "Image")
    answer:   "Sure, it is (0) [SEG], (1) [SEG], ..., (9) [SEG]."   (4 templates; 10 [SEG] per video, 1 per image)

Upstream puts its `<image>` placeholder where the video goes; here the question is split around it so a
pipeline can place the Qwen-VL video (or image) part there. Labels (`mask_labels`): -100 on system and user
turns and at every [SEG] position (their hidden states feed the SegPrompter, not the LM loss); upstream also
keeps "\\n", <|im_start|> and <|im_end|> as targets wherever they occur (`keep_token_ids`).
"""

from __future__ import annotations

import random

import numpy as np

IGNORE = -100
SEG_TOKEN = "[SEG]"
SHORT_QUESTIONS = (
    "What is {sent} in the Reference {modality}? Please respond with segmentation mask in the Target Image.",
    "What is {sent} in the Reference {modality}? Please output segmentation mask in the Target Image.",
    "Please find {sent} in the Reference {modality} and segment it in the Target Image.",
)
LONG_QUESTIONS = (
    "{sent} Please find it in the Reference {modality} and respond with segmentation mask in the Target Image.",
    "{sent} Please find it in the Reference {modality} and output segmentation mask in the Target Image.",
)
ANSWERS = ("It is {seg}.", "Sure, {seg}.", "Sure, it is {seg}.", "Sure, the segmentation result is {seg}.")
QUESTION_PREFIX = "Reference {modality}: "  # then the video / image, then " \n" and the question


def seg_answer_span(count: int, seg_token: str = SEG_TOKEN) -> str:
    """'(0) [SEG], (1) [SEG], ...' with `count` tokens."""
    return ", ".join(f"({i}) {seg_token}" for i in range(count))


def question_parts(expression: str, *, modality: str = "Video", rng: random.Random | None = None
                   ) -> tuple[str, str]:
    """-> (text before the visual input, text after it). Long templates for questions (ending in "?")."""
    rng = rng or random.Random()
    templates = LONG_QUESTIONS if expression.rstrip().endswith("?") else SHORT_QUESTIONS
    return QUESTION_PREFIX.format(modality=modality), " \n" + rng.choice(templates).format(
        sent=expression, modality=modality)


def answer(count: int, *, seg_token: str = SEG_TOKEN, rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    return rng.choice(ANSWERS).format(seg=seg_answer_span(count, seg_token))


def mask_labels(input_ids: np.ndarray, assistant: np.ndarray, seg_token_id: int,
                keep_token_ids: tuple[int, ...] = ()) -> np.ndarray:
    """input_ids (..., L); assistant (..., L) bool = the token belongs to an assistant turn -> labels (..., L):
    the ids on assistant tokens and on `keep_token_ids`, IGNORE elsewhere and at every [SEG] position."""
    input_ids = np.asarray(input_ids)
    keep = np.asarray(assistant, bool) | np.isin(input_ids, np.asarray(keep_token_ids, input_ids.dtype))
    labels = np.where(keep, input_ids, IGNORE)
    return np.where(input_ids == seg_token_id, IGNORE, labels).astype(np.int32)

