"""Token and vision inputs of STRIDE's streaming prompt, laid out exactly as the training pipeline writes them.

Training (data_pipelines `format="stride"`) renders one user turn: `<|im_start|>user\\n` + query + the video
(Qwen3-VL: `<t seconds><|vision_start|><|video_pad|>xN<|vision_end|>` per pair of frames, t = the pair's mean
time re-based to the clip start) + the slot string twice. A prefix over a mega-window of frames, cut right
after the k-th `<|vision_end|>`, is token for token the prefix of the same stream with only its first 2k frames
(special tokens are split before the BPE), which is what makes one cache serve every chunk of the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipelines.grain.text import IM_START, VIDEO_PAD, encode, video_placeholder
from stvl_jax.models.qwen_vl.host.placeholders import video_block_tokens
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig, process_video
from stvl_jax.errors import InputError
from stvl_jax.models.qwen_vl.inputs import rope_index
from stvl_jax.models.stride.config import StrideConfig


@dataclass(frozen=True)
class VideoPrefix:
    """[chat header, query, video] of one window of frames.

    ids: (L,) int32; group_ends: (G,) index of each frame group's <|vision_end|>; positions: (3, L) M-RoPE ids;
    pixel_values: (G*h*w, C*T*P*P) rows, group-major; grid: (G, h, w) of the whole window (patches)."""

    ids: np.ndarray
    group_ends: np.ndarray
    positions: np.ndarray
    pixel_values: np.ndarray
    grid: tuple[int, int, int]

    @property
    def groups(self) -> int:
        return self.grid[0]

    def crop_length(self, groups: int) -> int:
        """Prefix length of the stream's first `groups` frame groups (the cut after their <|vision_end|>)."""
        if not 1 <= groups <= self.groups:
            raise ValueError(f"cannot crop to {groups} frame groups of a {self.groups}-group prefix")
        return int(self.group_ends[groups - 1]) + 1

    def rope_delta(self, length: int | None = None) -> int:
        """transformers' rope_deltas of the first `length` tokens (all by default): max position + 1 - length."""
        length = len(self.ids) if length is None else length
        return int(self.positions[:, :length].max()) + 1 - length

    def view(self, groups: int) -> "VideoPrefix":
        """The prefix of the first `groups` frame groups as its own (shorter) video."""
        n = self.crop_length(groups)
        rows = groups * self.grid[1] * self.grid[2]
        return VideoPrefix(self.ids[:n], self.group_ends[:groups], self.positions[:, :n], self.pixel_values[:rows],
                           (groups, self.grid[1], self.grid[2]))


class StridePrompt:
    """Builds `VideoPrefix`es for one (tokenizer, model config, processor settings)."""

    def __init__(self, tokenizer, model_config, vision: PreprocessConfig, stride: StrideConfig):
        if model_config.family != "qwen3_vl":
            raise InputError("STRIDE prompts are Qwen3-VL prompts (one timestamped block per frame pair)")
        if vision.video.budget != "frame":  # a clip budget would resize a stream's frames as it grows
            raise InputError("STRIDE streaming needs a per-frame video resize rule (preprocessing video.budget "
                             "'frame'), so that a prefix of the stream is the stream's prefix; this checkpoint's "
                             "bounds the whole clip: pass --max-pixels (pixels per frame)")
        self.tokenizer = tokenizer
        self.config = model_config
        self.vision = vision
        self.stride = stride
        self.video_pad = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
        if self.video_pad != model_config.video_token_id:
            raise InputError(f"tokenizer's {VIDEO_PAD} id {self.video_pad} != the model's video_token_id "
                             f"{model_config.video_token_id}")
        self.vision_end = model_config.vision_end_token_id

    def pixels(self, frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """(T, H, W, 3) uint8 frames, T even -> (pixel rows, (T/2, h, w) patch grid) as the pipeline makes them."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) % 2:
            raise InputError(f"frames must be (T, H, W, 3) with T even, got shape {frames.shape}")
        pv, grid = process_video(frames, self.vision)
        return pv, tuple(int(x) for x in np.asarray(grid).reshape(-1)[:3])

    def prefix(self, query: str, frames: np.ndarray, times: np.ndarray) -> VideoPrefix:
        """times: (T,) frame times re-based to the window start (seconds)."""
        pv, grid = self.pixels(frames)
        text = f"{IM_START}user\n" + query + video_placeholder(grid, "qwen3_vl", np.asarray(times, np.float64),
                                                                self.vision.temporal_patch_size)
        ids, _ = encode(self.tokenizer, text, [], {self.video_pad: video_block_tokens(grid, self.vision.merge_size,
                                                                                     "qwen3_vl")})
        if (ids == self.stride.activation_token_id).any():
            raise InputError("the query contains a STRIDE slot token")
        ends = np.flatnonzero(ids == self.vision_end)
        if len(ends) != grid[0]:
            raise InputError(f"the query text contains {len(ends) - grid[0]} extra <|vision_end|> tokens")
        c = self.config
        pos, _ = rope_index(c, {"input_ids": ids[None], "video_grid_thw": np.asarray([grid])})
        return VideoPrefix(ids.astype(np.int32), ends, pos[:, 0].astype(np.int32), pv, grid)

    def slot_ids(self, labels: np.ndarray) -> np.ndarray:
        """(W,) slot states (0 inactive, 1 active, 2 masked) -> (copies * W,) token ids."""
        one = np.asarray(self.stride.slot_token_ids, np.int32)[np.asarray(labels, np.int64)]
        return np.tile(one, self.stride.copies)


def slot_positions(prefix: VideoPrefix, length: int, n: int, mode: str, mega_delta: int | None = None) -> np.ndarray:
    """(3, n) position ids of n slot tokens appended after the first `length` prefix tokens.

    correct: continue after the cropped prefix (max position + 1 + arange) = get_rope_index of the full
      sequence, as in training;
    reference: transformers' cached-rope_deltas rule of the reference eval, `length + arange + delta` with the
      delta of the whole mega-window prefill (`mega_delta`), which lags the correct ids by (h*w - max(h, w))
      merged tokens per frame group cut away."""
    if mode == "correct":
        start = int(prefix.positions[:, :length].max()) + 1
    elif mode == "reference":
        if mega_delta is None:
            raise ValueError("reference positions need the mega-window's rope delta")
        start = length + mega_delta
    else:
        raise ValueError(f"position mode must be 'correct' or 'reference', got {mode!r}")
    return np.broadcast_to(start + np.arange(n, dtype=np.int32), (3, n)).copy()
