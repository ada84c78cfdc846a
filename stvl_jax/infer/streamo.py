"""Streamo's streaming loop: one user turn per second (`[question\\n]<Xs-Ys>\\n<image>`), one assistant turn per
second (`</Silence>` | `</Standby>` | `</Response> answer`), the KV cache reused across turns.

- Frames are taken at `fps` (default 1) exactly as the training pipeline samples them.
- The conversation keeps at most `max_rounds` (user, assistant) pairs; when it overflows the oldest pair is
  dropped, the question is re-inserted into the first kept user turn, and the cache is rebuilt from the kept
  turns (the only re-encode; between overflows each second costs only its own tokens).
- `stop_on_first_response` ends a stream at the first `</Response>` (OVO-Bench style for single-answer tasks).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from data_pipelines.formats.streamo import STATE_TOKENS, STREAMO_SYSTEM_PROMPT
from data_pipelines.grain.text import IM_END, encode, image_placeholder, render_chat
from stvl_jax.models.qwen_vl.host.placeholders import tokens_per_grid
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig, image_size, process_images
from stvl_jax.infer.session import ChatSession


@dataclasses.dataclass
class StreamoTurn:
    second: int
    user: str  # user text without the image
    output: str  # the assistant turn as generated (without <|im_end|>)
    state: str | None  # the state token it starts with, or None if malformed
    latency_s: float


def parse_state(text: str) -> str | None:
    text = text.strip()
    return next((s for s in STATE_TOKENS if text.startswith(s)), None)


def user_turn_texts(num_frames: int, questions: Sequence[tuple[int, str]]) -> list[str]:
    """`<is-(i+1)s>` turns with each question placed at frame max(t-1, 0) (the to-stream rule); the first
    question is also put at frame 0 when none lands there, as in the training data."""
    at = {}
    for t, q in questions:
        at[max(int(t) - 1, 0)] = q
    if questions and 0 not in at:
        at[0] = questions[0][1]
    return [(f"{at[i]}\n" if i in at else "") + f"<{i}s-{i + 1}s>" for i in range(num_frames)]


class StreamoRunner:
    def __init__(self, model, tokenizer, vision: PreprocessConfig | None = None, *, max_rounds: int = 120,
                 max_answer_tokens: int = 32, system_prompt: str | None = STREAMO_SYSTEM_PROMPT,
                 stop_on_first_response: bool = False, capacity: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.vision = vision or model.preprocessing  # the checkpoint's (what the model was trained at)
        self.max_rounds = max_rounds
        self.max_answer_tokens = max_answer_tokens
        self.system_prompt = system_prompt
        self.stop_on_first_response = stop_on_first_response
        self.session = ChatSession(model, capacity=capacity)  # initial KV slots; grows by doubling
        self.im_end = tokenizer.convert_tokens_to_ids(IM_END)
        self.image_pad = model.config.image_token_id

    # ------------------------------------------------------------------ encoding
    def _encode(self, text: str, grids) -> np.ndarray:
        counts = [tokens_per_grid(g, self.vision.merge_size) for g in grids]
        ids, _ = encode(self.tokenizer, text, [], {self.image_pad: counts} if counts else None)
        return ids

    def _user_content(self, text: str, grid) -> str:
        return text + "\n" + image_placeholder()

    def _rebuild(self, history, user_text, pv, grid, question: str | None):
        """Re-encode system + kept rounds + the current user turn into a fresh cache."""
        self.session.reset()
        messages = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        pixels, grids = [], []
        for k, (u, out, p, g) in enumerate(history):
            if k == 0 and question and not u.startswith(question):
                u = f"{question}\n{u}"
            messages += [{"role": "user", "content": self._user_content(u, g)},
                         {"role": "assistant", "content": out}]
            pixels.append(p)
            grids.append(g)
        messages.append({"role": "user", "content": self._user_content(user_text, grid)})
        pixels.append(pv)
        grids.append(grid)
        text, _ = render_chat(messages, add_generation_prompt=True)
        ids = self._encode(text, grids)
        self.session.append(ids, pixel_values=np.concatenate(pixels), image_grid_thw=np.asarray(grids))

    # ------------------------------------------------------------------ the loop
    def run(self, frames: np.ndarray, user_texts: Sequence[str], question: str | None = None) -> list[StreamoTurn]:
        """frames: (T, H, W, 3) uint8 at the stream rate; user_texts[i]: the text of turn i (without image)."""
        if len(frames) < len(user_texts):
            raise ValueError(f"{len(user_texts)} turns but only {len(frames)} frames")
        size = image_size(frames.shape[1], frames.shape[2], self.vision)
        turns: list[StreamoTurn] = []
        history: list[tuple] = []  # (user text, assistant output, pixels, grid) of rounds in the context
        for i, user_text in enumerate(user_texts):
            t0 = time.perf_counter()
            pv, grid = process_images(frames[i : i + 1], self.vision, size)
            grid = tuple(int(x) for x in np.asarray(grid).reshape(-1, 3)[0])
            if i == 0 or len(history) >= self.max_rounds:
                history = history[len(history) - self.max_rounds + 1:] if i else []
                self._rebuild(history, user_text, pv, grid, question)
            else:
                text = "\n" + render_chat([{"role": "user", "content": self._user_content(user_text, grid)}],
                                          add_generation_prompt=True)[0]
                self.session.append(self._encode(text, [grid]), pixel_values=pv, image_grid_thw=np.asarray([grid]))
            out_ids = self.session.generate(stop_ids=(self.im_end,), max_new_tokens=self.max_answer_tokens + 1)
            if out_ids[-1] != self.im_end:  # budget exhausted: close the turn so the next one is well formed
                self.session.append([self.im_end])
                out_ids = out_ids + [self.im_end]
            output = self.tokenizer.decode(out_ids[:-1], skip_special_tokens=False)
            state = parse_state(output)
            history.append((user_text, output, pv, grid))
            turns.append(StreamoTurn(i, user_text, output, state, time.perf_counter() - t0))
            if self.stop_on_first_response and state == STATE_TOKENS[2]:
                break
        return turns
