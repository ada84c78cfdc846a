"""`QwenVLForConditionalGeneration`: vision tower + text decoder + LM head, HF-numerics.

Two entry points:
- `model(**batch)` — host API: the HF processor's batch dict (numpy or torch tensors) -> `QwenVLOutput` with
  `.logits` (B, L, V); prepares inputs on the host and runs a jitted forward (on the model's mesh if it has one);
- `model.forward(inputs, cache=None)` — traceable: `ModelInputs` of arrays, used inside training steps and
  generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stvl_jax.models.qwen_vl.config import QwenVLConfig
from stvl_jax.models.qwen_vl.host.preprocess import PreprocessConfig
from stvl_jax.models.qwen_vl.inputs import ModelInputs, prepare_inputs
from stvl_jax.models.qwen_vl.text import KVCache, TextModel
from stvl_jax.models.qwen_vl.vision import VisionTower
from stvl_jax.models.qwen_vl.vision_inputs import VisionInputs
from stvl_jax.nn.linear import Linear
from stvl_jax.sharding import auto_mesh, constrain, host_to_mesh


@dataclasses.dataclass
class QwenVLOutput:
    logits: jax.Array  # (B, L, V)
    hidden_states: jax.Array | None = None  # (B, L, D) after the final norm
    rope_deltas: np.ndarray | None = None  # (B, 1)


def place_visual_features(embeds: jax.Array, input_ids: jax.Array, features: jax.Array, vision: VisionInputs,
                          image_token_id: int, video_token_id: int) -> jax.Array:
    """Replace placeholder-token rows of `embeds` (B, L, D) by merged vision features.

    features: (M, D) merged tokens, images first then videos (`merged_order` maps them to merger outputs).
    The k-th image placeholder in row-major order takes image token k; the k-th video placeholder takes video
    token k — HF's masked_scatter order. Non-placeholder rows are returned unchanged (0 for DeepStack input).
    """
    is_img = input_ids == image_token_id
    is_vid = input_ids == video_token_id
    flat_img = jnp.cumsum(is_img.reshape(-1)).reshape(is_img.shape) - 1
    flat_vid = jnp.cumsum(is_vid.reshape(-1)).reshape(is_vid.shape) - 1 + vision.num_image_tokens
    idx = jnp.where(is_img, flat_img, jnp.where(is_vid, flat_vid, 0))
    idx = jnp.clip(idx, 0, features.shape[0] - 1)
    picked = features[vision.merged_order[idx]].astype(embeds.dtype)
    return jnp.where((is_img | is_vid)[..., None], picked, embeds)


class QwenVLForConditionalGeneration(nnx.Module):
    def __init__(self, config: QwenVLConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, precision=None,
                 remat: str = "none", scan_layers: bool = True, preprocessing: PreprocessConfig | None = None,
                 rngs: nnx.Rngs):
        """preprocessing: how this model's inputs are prepared (the checkpoint's; None: the family default).
        The vision tower normalizes integer pixel values with its mean/std; prompt builders read the rest."""
        self.config = config
        self.preprocessing = config.check_preprocessing(preprocessing or config.default_preprocessing())
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.remat = remat
        self.scan_layers = scan_layers
        kw = dict(dtype=dtype, param_dtype=param_dtype, precision=precision, remat=remat, scan_layers=scan_layers,
                  rngs=rngs)
        pre = self.preprocessing
        self.visual = VisionTower(config, pixel_mean_std=(pre.image_mean, pre.image_std), **kw)
        self.language_model = TextModel(config.text, **kw)
        if not config.tie_word_embeddings:
            self.lm_head = Linear(config.text.hidden_size, config.text.vocab_size, in_axes=("embed",),
                                  out_axes=("vocab",), dtype=dtype, param_dtype=param_dtype, precision=precision,
                                  init_std=config.text.initializer_range, rngs=rngs)

    def build_options(self) -> dict:
        """Constructor options (besides config/rngs), to rebuild an equivalent model (e.g. after a resize)."""
        return dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision, remat=self.remat,
                    scan_layers=self.scan_layers,
                    preprocessing=self.preprocessing)

    # ---------------------------------------------------------------- traceable core
    def embed(self, inputs: ModelInputs) -> tuple[jax.Array, jax.Array | None]:
        """Token embeddings with vision features placed, and DeepStack features (k, B, L, D) or None."""
        embeds = self.language_model.embed_tokens(inputs.input_ids)
        if inputs.vision is None:
            return embeds, None
        merged, deepstack = self.visual(inputs.vision)
        ids, c = inputs.input_ids, self.config
        embeds = place_visual_features(embeds, ids, merged, inputs.vision, c.image_token_id, c.video_token_id)
        if not deepstack:
            return embeds, None
        zeros = jnp.zeros_like(embeds)
        ds = jnp.stack([place_visual_features(zeros, ids, f, inputs.vision, c.image_token_id, c.video_token_id)
                        for f in deepstack])
        return embeds, ds

    def logits(self, hidden: jax.Array) -> jax.Array:
        if self.config.tie_word_embeddings:
            out = self.language_model.embed_tokens.attend(hidden)
        else:
            out = self.lm_head(hidden)
        return constrain(out, ("act_batch", "act_len", "act_vocab"))

    def token_logits(self, hidden: jax.Array, token_ids) -> jax.Array:
        """Logits of a few vocabulary entries only: (..., D) -> (..., len(token_ids)) (e.g. STRIDE's 2-way
        head, or a class subset) without materialising the full vocabulary."""
        ids = jnp.asarray(token_ids, jnp.int32)
        if self.config.tie_word_embeddings:
            rows = self.language_model.embed_tokens.embedding[...][ids]  # (K, D)
        else:
            rows = self.lm_head.kernel[...][:, ids].T
        return jnp.einsum("...d,kd->...k", hidden.astype(self.dtype), rows.astype(self.dtype),
                          precision=self.precision)

    def forward(self, inputs: ModelInputs, cache: KVCache | None = None, *, return_hidden: bool = False,
                last_only: bool = False, compute_logits: bool = True):
        """-> (logits (B, L, V) [(B, 1, V) with last_only; None without compute_logits], hidden (B, L, D) or
        None, cache). Losses that need few vocabulary entries skip the logits and use `token_logits`."""
        embeds, deepstack = self.embed(inputs)
        hidden, cache = self.language_model(embeds, inputs.position_ids, inputs.attention_mask, deepstack, cache)
        logits = self.logits(hidden[:, -1:] if last_only else hidden) if compute_logits else None
        return logits, (hidden if return_hidden else None), cache

    # ---------------------------------------------------------------- host API
    def prepare(self, batch: Mapping, *, pad_patches_to_multiple: int | None = None, vision_buckets: bool = True):
        return prepare_inputs(self.config, batch, pad_patches_to_multiple=pad_patches_to_multiple,
                              vision_buckets=vision_buckets)

    def __call__(self, *, return_hidden: bool = False, **batch) -> QwenVLOutput:
        inputs, deltas = self.prepare(batch)
        mesh = auto_mesh(getattr(self, "mesh", None))
        if mesh is not None:
            with jax.set_mesh(mesh):
                inputs = place_inputs(inputs, mesh)
                logits, hidden = _jit_forward(self, inputs, return_hidden)
        else:
            logits, hidden = _jit_forward(self, inputs, return_hidden)
        return QwenVLOutput(logits=logits, hidden_states=hidden, rope_deltas=deltas)


def place_inputs(inputs: ModelInputs, mesh, global_rows: int | None = None) -> ModelInputs:
    """Host `ModelInputs` -> global arrays on `mesh`: token rows over `act_batch`, vision arrays replicated.

    global_rows: the global batch size when each process holds only its own rows (training); None: `inputs` is
    the whole batch (the same on every process)."""

    def rows(x, axis: int):
        axes = [None] * np.ndim(x)
        axes[axis] = "act_batch"
        shape = None
        if global_rows is not None:
            shape = list(np.shape(x))
            shape[axis] = global_rows
        return host_to_mesh(x, mesh, axes, shape)

    vision = inputs.vision
    if vision is not None:
        vision = jax.tree.map(lambda x: host_to_mesh(x, mesh, (None,) * np.ndim(x)), vision)
    return ModelInputs(rows(inputs.input_ids, 0), rows(inputs.attention_mask, 0), rows(inputs.position_ids, 1),
                       vision)


# graph_updates=False: the forward mutates no state, and without it nnx.jit returns every parameter as an output
# of the program, i.e. XLA copies the whole model (~0.2 GB at 50M params) on each call.
@nnx.jit(static_argnums=(2,), graph_updates=False)
def _jit_forward(model: QwenVLForConditionalGeneration, inputs: ModelInputs, return_hidden: bool):
    logits, hidden, _ = model.forward(inputs, return_hidden=return_hidden)
    return logits, hidden
