"""SAM2's video model (transformers `Sam2VideoModel`): the image model plus the memory modules.

    image              `Sam2ImageModel`: Hiera + FPN, prompt encoder, mask decoder, no_memory_embedding
    memory_encoder     `MemoryEncoder`: a frame's pixel features + its mask -> a spatial memory (H, W, mem_dim)
    memory_attention   `MemoryAttention`: a frame's features conditioned on the memory bank
    memory_embeddings  `MemoryEmbeddings`: temporal memory embedding, object-pointer head and its temporal
                       projection, no-object pointer, occlusion embedding, mask-prompt downsampler

Tracking (per-frame steps over the memory bank) is `models.sam2.tracker`; the HF key map is
`converters.sam2_video_keys.video_key_map` (every tensor of HF's state dict).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.sam2.image_model import Sam2ImageModel, init_jitted
from stvl_jax.models.sam2.memory_attention import SCAN_LAYERS, MemoryAttention
from stvl_jax.models.sam2.memory_bank import MemoryEmbeddings
from stvl_jax.models.sam2.memory_encoder import MemoryEncoder
from stvl_jax.models.sam2.video_config import Sam2VideoConfig


class Sam2VideoModel(nnx.Module):
    """scan_layers: the memory attention's and memory fuser's layers as a `lax.scan` (False: unrolled)."""

    def __init__(self, config: Sam2VideoConfig, *, dtype=jnp.float32, precision=None,
                 scan_layers: bool = SCAN_LAYERS, rngs: nnx.Rngs):
        self.config = config
        self.dtype = dtype
        self.image = Sam2ImageModel(config.image, dtype=dtype, precision=precision, rngs=rngs)
        self.memory_encoder = MemoryEncoder(config.memory_encoder, dtype=dtype, scan_layers=scan_layers, rngs=rngs)
        self.memory_attention = MemoryAttention(config.memory_attention, dtype=dtype, scan_layers=scan_layers,
                                                rngs=rngs)
        self.memory_embeddings = MemoryEmbeddings(config.memory_bank, dtype=dtype, rngs=rngs)


def abstract_video_model(config: Sam2VideoConfig, *, dtype=jnp.float32, precision=None,
                         scan_layers: bool = SCAN_LAYERS) -> Sam2VideoModel:
    """The model described with `nnx.eval_shape` (shapes, dtypes, logical axes; nothing allocated): the target a
    checkpoint is loaded into."""
    return nnx.eval_shape(lambda: Sam2VideoModel(config, dtype=dtype, precision=precision, scan_layers=scan_layers,
                                                 rngs=nnx.Rngs(0)))


def init_video_model(config: Sam2VideoConfig, *, seed: int = 0, mesh=None, dtype=jnp.float32,
                     precision=None, scan_layers: bool = SCAN_LAYERS) -> Sam2VideoModel:
    """Freshly initialised model, drawn in one jitted program (laid out on `mesh` by the rules table when given)."""
    return init_jitted(lambda rngs: Sam2VideoModel(config, dtype=dtype, precision=precision, scan_layers=scan_layers,
                                                  rngs=rngs), seed, mesh)
