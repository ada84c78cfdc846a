"""An incremental chat session over one KV cache: append turns (text + images), generate, append again.

Streaming assistants (Streamo's one turn per second) call the model thousands of times on a growing
conversation; re-encoding the history each second would cost O(T^2). The session keeps the KV cache and the
M-RoPE position counter between calls, so each second costs only its own tokens.

Position ids of an appended chunk are the chunk's own `get_rope_index` shifted by the session's counter — the
rules are sequential (each run starts at the counter, text advances it by its length, an image by
max(h, w)/merge), so this equals computing positions over the whole conversation. Tests check the session's
logits against one full forward of the concatenated conversation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stvl_jax.models.qwen_vl.inputs import ModelInputs, rope_index
from stvl_jax.models.qwen_vl.text import KVCache
from stvl_jax.models.qwen_vl.vision_inputs import prepare_vision_inputs
from stvl_jax.nn.bound_jit import bind_jit


def _step(model, inputs: ModelInputs, cache: KVCache):
    logits, _, cache = model.forward(inputs, cache, last_only=True)
    return logits[0, -1], cache


@functools.partial(jax.jit, static_argnums=1)
def _grow(cache: KVCache, extra: int) -> KVCache:
    pad = [(0, 0), (0, 0), (0, extra), (0, 0), (0, 0)]
    return KVCache(jnp.pad(cache.k, pad), jnp.pad(cache.v, pad), jnp.pad(cache.valid, [(0, 0), (0, extra)]),
                   cache.index)


class ChatSession:
    """Batch-1 incremental decoding. `append` feeds tokens (and the images their placeholders stand for) and
    returns the next-token logits; `generate` continues greedily until a stop id."""

    def __init__(self, model, *, capacity: int = 256, cache_dtype=None):
        self.model = model
        self.config = model.config
        self.initial_capacity = capacity
        self.cache_dtype = cache_dtype or model.dtype
        # Called once per token: no per-call NNX graph traversal, and the cache is updated in place.
        self._step = bind_jit(_step, model, donate_argnums=(2,))
        self.reset()

    def reset(self) -> None:
        self.cache = KVCache.init(self.config.text, 1, self.initial_capacity, self.cache_dtype)
        self.next_position = 0
        self.length = 0
        self.tokens: list[int] = []
        self.last_logits = None

    def _ensure_capacity(self, n: int) -> None:
        """Grow to the next power of two that fits: each step attends over the whole capacity, so a cache
        sized for the longest conversation makes every early step pay for it (4096 slots cost a tiny model
        ~3x what 512 do per token on CPU), while doubling keeps the number of compiled shapes logarithmic."""
        need = self.length + n
        if need > self.cache.capacity:
            self.cache = _grow(self.cache, (1 << (need - 1).bit_length()) - self.cache.capacity)

    def append(self, input_ids: Sequence[int], *, pixel_values: np.ndarray | None = None,
               image_grid_thw: np.ndarray | None = None) -> np.ndarray:
        """Feed a chunk; returns the logits (V,) for the token after it."""
        ids = np.asarray(input_ids, np.int32)[None]
        c = self.config
        if ids[0, -1] in (c.image_token_id, c.video_token_id):
            raise ValueError("a chunk must end with a text token (the position counter after a vision run is "
                             "not its last position + 1)")
        pos, _ = rope_index(c, {"input_ids": ids, "image_grid_thw": image_grid_thw})
        vision = prepare_vision_inputs(c, pixel_values=pixel_values, image_grid_thw=image_grid_thw)
        inputs = ModelInputs(ids, np.ones_like(ids), (pos + self.next_position).astype(np.int32), vision)
        self._ensure_capacity(ids.shape[1])
        logits, self.cache = self._step(jax.tree.map(jnp.asarray, inputs), self.cache)
        self.next_position += int(pos[0, 0, -1]) + 1
        self.length += ids.shape[1]
        self.tokens.extend(ids[0].tolist())
        self.last_logits = np.asarray(logits)
        return self.last_logits

    def generate(self, *, stop_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation from the last appended chunk; the stop id is generated and appended too."""
        if self.last_logits is None:
            raise RuntimeError("append a prompt before generating")
        out = []
        for _ in range(max_new_tokens):
            token = int(np.argmax(self.last_logits))
            out.append(token)
            self.append([token])
            if token in stop_ids:
                break
        return out
