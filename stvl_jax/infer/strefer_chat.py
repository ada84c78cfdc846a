"""The Strefer engine's `stvl` annotator backend: this project's Qwen-VL answering one prompt about a clip.

`StvlChatFactory(checkpoint, ...)` is picklable (Beam ships it to each worker); calling it in the worker's
`DoFn.setup` loads the model once and returns the chat callable (frames, times, prompt) -> reply text, which
`data_pipelines.strefer.annotators.ChatAnnotator` asks Strefer's three steps. Greedy decoding.
"""

from __future__ import annotations

import numpy as np


class StvlChat:
    """model: a loaded Qwen-VL; vision: its preprocessing (default `model.preprocessing`, what checkpoints carry)."""

    def __init__(self, model, tokenizer, max_new_tokens: int, vision=None):
        self.model, self.tok, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.vision = vision or model.preprocessing

    def __call__(self, frames, times, prompt: str) -> str:
        import stvl_jax
        from data_pipelines.grain.text import SpecialIds, encode, render_chat, token_types, video_placeholder
        from stvl_jax.models.qwen_vl.host.placeholders import video_block_tokens
        from stvl_jax.models.qwen_vl.host.preprocess import process_video

        vision = self.vision
        ids = SpecialIds.from_tokenizer(self.tok)
        if frames is None:
            text, _ = render_chat([{"role": "user", "content": prompt}], add_generation_prompt=True)
            input_ids, _ = encode(self.tok, text, [], {})
            batch = {"input_ids": np.asarray([input_ids]), "attention_mask": np.ones((1, len(input_ids)), np.int64)}
        else:
            t = vision.temporal_patch_size
            n = max(t, len(frames) - len(frames) % t)  # whole temporal patches
            sel = np.linspace(0, len(frames) - 1, n).round().astype(int)
            pv, grid = process_video(np.asarray(frames)[sel], vision)
            content = video_placeholder(grid[0], vision.family, np.asarray(times)[sel], t) + prompt
            text, _ = render_chat([{"role": "user", "content": content}], add_generation_prompt=True)
            input_ids, _ = encode(self.tok, text, [], {ids.video_pad: video_block_tokens(grid[0], vision.merge_size,
                                                                                        vision.family)})
            spg = float(t * np.mean(np.diff(np.asarray(times)[sel]))) if n > 1 else 1.0  # seconds per temporal patch
            ids_row = np.asarray([input_ids], np.int64)
            batch = {"input_ids": ids_row, "attention_mask": np.ones_like(ids_row),
                     "mm_token_type_ids": np.asarray([token_types(input_ids, ids)], np.int64),
                     "pixel_values_videos": pv, "video_grid_thw": grid}
            if vision.family == "qwen2_5_vl":
                batch["second_per_grid_ts"] = np.asarray([spg], np.float32)
        stop = sorted({ids.im_end, *([self.tok.eos_token_id] if self.tok.eos_token_id is not None else [])})
        out = np.asarray(stvl_jax.generate(self.model, batch, max_new_tokens=self.max_new_tokens,
                                           eos_token_id=stop))[0]
        keep = []
        for token in out.tolist():
            if token in stop:
                break
            keep.append(token)
        return self.tok.decode(keep, skip_special_tokens=True)


class StvlChatFactory:
    def __init__(self, checkpoint: str, tokenizer: str | None = None, max_new_tokens: int = 512):
        self.checkpoint, self.tokenizer, self.max_new_tokens = checkpoint, tokenizer, max_new_tokens

    def __call__(self) -> StvlChat:
        import stvl_jax
        from data_pipelines.tokenizer import open_tokenizer

        model = stvl_jax.load_model(self.checkpoint)
        return StvlChat(model, open_tokenizer(self.tokenizer or self.checkpoint, "--tokenizer"), self.max_new_tokens)
