"""The composed SAM2 image model (transformers `Sam2Model`): pixels + prompts -> low-res mask logits, IoU scores,
object-score logits.

Inputs use HF's layouts (what `Sam2Processor` returns): pixel_values (B, 3, H, W); input_points (B, P, N, 2)
pixels (x, y); input_labels (B, P, N); input_boxes (B, P, 4); input_masks (B, 1, h, w) (resized to the prompt
encoder's 4e x 4e with antialiased bilinear when another size). Internally everything is channels-last.
Outputs: pred_masks (B, P, K, 4e, 4e), iou_scores (B, P, K), object_score_logits (B, P, 1), K = 3 with
`multimask_output` else 1; image_embeddings = (feat_s0 (B, 4e, 4e, D/8), feat_s1 (B, 2e, 2e, D/4),
embedding (B, e, e, D)) channels-last, reusable through `image_embeddings=` for more prompts on the same images.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.errors import InputError
from stvl_jax.models.sam2.config import Sam2Config
from stvl_jax.models.sam2.mask_decoder import MaskDecoder
from stvl_jax.models.sam2.neck import VisionEncoder
from stvl_jax.models.sam2.prompt_encoder import PromptEncoder, RandomFourierEmbedding, resize_masks
from stvl_jax.nn.params import param, zeros


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Sam2ImageOutput:
    iou_scores: jax.Array
    pred_masks: jax.Array
    object_score_logits: jax.Array
    image_embeddings: tuple[jax.Array, ...]
    mask_tokens: jax.Array  # (B, P, K, D): the selected mask tokens after the two-way transformer


class Sam2ImageModel(nnx.Module):
    def __init__(self, config: Sam2Config, *, dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        pc = config.prompt_encoder
        kw = dict(dtype=dtype, precision=precision, rngs=rngs)
        self.config = config
        # transformers keeps two Fourier matrices (this one for the image grid, the prompt encoder's for
        # prompts), both kept so that any HF model loads exactly; Meta's SAM2 has one (`pe_layer`), so a model
        # built from scratch draws one and copies it (independent draws put prompt and image positions in
        # unrelated bases, which the decoder's attention would have to learn to align)
        self.shared_image_embedding = RandomFourierEmbedding(pc.hidden_size, pc.scale, rngs=rngs)
        self.vision_encoder = VisionEncoder(config.vision, **kw)
        self.prompt_encoder = PromptEncoder(pc, **kw)
        self.mask_decoder = MaskDecoder(config.mask_decoder, **kw)
        fourier = self.shared_image_embedding.positional_embedding
        self.prompt_encoder.shared_embedding.positional_embedding.set_value(fourier.get_value())
        D = config.vision.fpn_hidden_size
        self.no_memory_embedding = param(rngs, zeros, (1, 1, D), (None, None, "embed"))
        self.dtype = dtype

    def image_positional_embeddings(self) -> jax.Array:
        """(e, e, D): Fourier features of the image-embedding grid's cell centres."""
        e = self.config.prompt_encoder.embedding_size
        centres = (jnp.arange(e, dtype=jnp.float32) + 0.5) / e
        xy = jnp.stack(jnp.meshgrid(centres, centres, indexing="xy"), axis=-1)  # [y, x] -> (x_c, y_c)
        return self.shared_image_embedding(xy)

    def image_features(self, pixel_values: jax.Array) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
        """pixel_values (B, 3, H, W) -> (levels, position encodings), finest first, channels-last; levels 0 and 1
        already projected by the decoder's conv_s0 / conv_s1 (done once per image, not per prompt)."""
        levels, pos, _ = self.vision_encoder(jnp.moveaxis(pixel_values, 1, -1).astype(self.dtype))
        levels = (self.mask_decoder.conv_s0(levels[0]), self.mask_decoder.conv_s1(levels[1]), *levels[2:])
        return levels, pos

    def get_image_embeddings(self, pixel_values: jax.Array) -> tuple[jax.Array, ...]:
        """(feat_s0, feat_s1, embedding + no_memory_embedding), channels-last (HF `get_image_embeddings`)."""
        levels, _ = self.image_features(pixel_values)
        return (*levels[:-1], levels[-1] + self.no_memory_embedding[...].astype(levels[-1].dtype))

    def check_inputs(self, pixel_values, points, labels, boxes, masks, image_embeddings) -> None:
        """One `InputError` line naming the first malformed input (shapes only: works on tracers)."""
        if (pixel_values is None) == (image_embeddings is None):
            raise InputError("give exactly one of pixel_values or image_embeddings")
        bc = self.config.vision.backbone
        want = (bc.num_channels, *bc.image_size)
        if pixel_values is not None and (pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != want):
            raise InputError(f"pixel_values has shape {tuple(pixel_values.shape)}; this model takes (batch, "
                             f"{want[0]}, {want[1]}, {want[2]}) (resize to the config's image_size first)")
        if image_embeddings is not None and len(image_embeddings) != 3:
            raise InputError(f"image_embeddings must be the 3 maps of get_image_embeddings, got "
                             f"{len(image_embeddings)}")
        if points is not None:
            if points.ndim != 4 or points.shape[-1] != 2:
                raise InputError(f"input_points has shape {tuple(points.shape)}; expected (batch, prompt sets, "
                                 "points, 2) as (x, y)")
            if labels is not None and tuple(labels.shape) != tuple(points.shape[:-1]):
                raise InputError(f"input_labels has shape {tuple(labels.shape)}; expected "
                                 f"{tuple(points.shape[:-1])} (one label per point)")
        if boxes is not None and (boxes.ndim != 3 or boxes.shape[-1] != 4):
            raise InputError(f"input_boxes has shape {tuple(boxes.shape)}; expected (batch, prompt sets, 4) as "
                             "x0, y0, x1, y1")
        if points is not None and boxes is not None and points.shape[1] != boxes.shape[1]:
            raise InputError(f"input_points has {points.shape[1]} prompt sets per image but input_boxes has "
                             f"{boxes.shape[1]}; they must match")
        if masks is not None and (masks.ndim != 4 or masks.shape[1] != 1):
            raise InputError(f"input_masks has shape {tuple(masks.shape)}; expected (batch, 1, height, width)")

    def __call__(self, pixel_values: jax.Array | None = None, input_points: jax.Array | None = None,
                 input_labels: jax.Array | None = None, input_boxes: jax.Array | None = None,
                 input_masks: jax.Array | None = None, image_embeddings: tuple[jax.Array, ...] | None = None,
                 multimask_output: bool = True, training: bool = False) -> Sam2ImageOutput:
        self.check_inputs(pixel_values, input_points, input_labels, input_boxes, input_masks, image_embeddings)
        if pixel_values is not None:
            image_embeddings = self.get_image_embeddings(pixel_values)
        b = image_embeddings[-1].shape[0]
        if input_points is not None and input_labels is None:
            input_labels = jnp.ones(input_points.shape[:-1], jnp.int32)
        if input_points is None and input_boxes is None:  # no prompt: one "not a point"
            input_points = jnp.zeros((b, 1, 1, 2), jnp.float32)
            input_labels = -jnp.ones((b, 1, 1), jnp.int32)
        if input_masks is not None:
            input_masks = resize_masks(input_masks, self.config.prompt_encoder.mask_input_size)
        sparse, dense = self.prompt_encoder(input_points, input_labels, input_boxes, input_masks, batch_size=b)
        out = self.mask_decoder(image_embeddings[-1], self.image_positional_embeddings()[None], sparse, dense,
                                tuple(image_embeddings[:-1]), multimask_output=multimask_output, training=training)
        return Sam2ImageOutput(out.iou_scores, out.masks, out.object_score_logits, tuple(image_embeddings),
                               out.mask_tokens)


def abstract_image_model(config: Sam2Config, *, dtype=jnp.float32, precision=None) -> Sam2ImageModel:
    """The model described with `nnx.eval_shape` (shapes, dtypes, logical axes; nothing allocated): the target a
    checkpoint is loaded into."""
    return nnx.eval_shape(lambda: Sam2ImageModel(config, dtype=dtype, precision=precision, rngs=nnx.Rngs(0)))


def init_image_model(config: Sam2Config, *, seed: int = 0, mesh=None, dtype=jnp.float32,
                     precision=None) -> Sam2ImageModel:
    """Freshly initialised model, drawn in one jitted program (laid out on `mesh` by the rules table when given)
    instead of one dispatch per parameter."""
    return init_jitted(lambda rngs: Sam2ImageModel(config, dtype=dtype, precision=precision, rngs=rngs), seed, mesh)


def init_jitted(build, seed: int, mesh):
    """`build(rngs)` (a module constructor) drawn in one jitted program, laid out on `mesh` when given."""
    from stvl_jax.sharding import auto_mesh, state_shardings

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
    shardings = state_shardings(abstract, auto_mesh(mesh)) if mesh is not None else None
    model = nnx.merge(graphdef, jax.jit(lambda: nnx.state(build(nnx.Rngs(seed))), out_shardings=shardings)())
    if mesh is not None:
        model.mesh = auto_mesh(mesh)
    return model
