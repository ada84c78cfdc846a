"""SAM2 mask decoder (transformers `Sam2MaskDecoder`): prompt tokens + image embedding -> mask logits, IoU
predictions, object-score logits.

Tokens = [object-score token, IoU token, M = num_multimask_outputs + 1 mask tokens, sparse prompt embeddings].
After the two-way transformer the image tokens are upscaled 4x by two transposed convs, adding the projected
high-resolution FPN levels (`conv_s1` at 2x, `conv_s0` at 4x); each mask token's hypernetwork MLP gives the
weights of a dot product with the upscaled map. Output selection: multimask -> masks 1..M-1; single mask ->
mask 0, or, in inference with `dynamic_multimask_via_stability`, the best-IoU multimask output wherever mask 0's
stability score (area above +delta / area above -delta) is below the threshold.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.models.sam2.config import MaskDecoderConfig
from stvl_jax.models.sam2.two_way_transformer import FeedForward, TwoWayTransformer
from stvl_jax.nn.conv import Conv2d, ConvTranspose2d
from stvl_jax.nn.mlp import activation
from stvl_jax.nn.norms import LayerNorm
from stvl_jax.nn.params import normal, param


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecoderOutput:
    """masks (B, P, K, 4e, 4e) logits; iou_scores (B, P, K); mask_tokens (B, P, K, D) (the selected mask
    tokens' outputs: object pointers in video); object_score_logits (B, P, 1). K = M - 1 or 1."""

    masks: jax.Array
    iou_scores: jax.Array
    mask_tokens: jax.Array
    object_score_logits: jax.Array


class MaskDecoder(nnx.Module):
    def __init__(self, config: MaskDecoderConfig, *, dtype=jnp.float32, precision=None, rngs: nnx.Rngs):
        c, D = config, config.hidden_size
        self.config = c
        M = c.num_multimask_outputs + 1
        self.num_mask_tokens = M
        self.iou_token = param(rngs, normal(1.0), (1, D), (None, "embed"))
        self.mask_tokens = param(rngs, normal(1.0), (M, D), (None, "embed"))
        self.obj_score_token = param(rngs, normal(1.0), (1, D), (None, "embed"))
        kw = dict(dtype=dtype, precision=precision, rngs=rngs)
        self.transformer = TwoWayTransformer(c, **kw)
        self.upscale_conv1 = ConvTranspose2d(D, D // 4, 2, in_axis="embed", **kw)
        self.upscale_conv2 = ConvTranspose2d(D // 4, D // 8, 2, **kw)
        self.upscale_layer_norm = LayerNorm(D // 4, eps=1e-6, rngs=rngs)
        for m in range(M):
            setattr(self, f"hypernetwork_mlp_{m}", FeedForward(D, D, D // 8, 3, **kw))
        self.iou_prediction_head = FeedForward(D, c.iou_head_hidden_dim, M, c.iou_head_depth, sigmoid_output=True,
                                               **kw)
        self.conv_s0 = Conv2d(D, D // 8, 1, in_axis="embed", **kw)
        self.conv_s1 = Conv2d(D, D // 4, 1, in_axis="embed", **kw)
        self.pred_obj_score_head = FeedForward(D, D, 1, 3, **kw)
        self.dtype = dtype
        self.precision = precision

    def __call__(self, image_embeddings: jax.Array, image_pe: jax.Array, sparse: jax.Array, dense: jax.Array,
                 high_res_features: tuple[jax.Array, jax.Array], *, multimask_output: bool,
                 training: bool = False) -> DecoderOutput:
        """image_embeddings (B, e, e, D); image_pe (B or 1, e, e, D); sparse (B, P, T, D); dense (B, e, e, D);
        high_res_features: (feat_s0 (B, 4e, 4e, D/8), feat_s1 (B, 2e, 2e, D/4)), already through conv_s0/s1."""
        b, e_h, e_w, D = image_embeddings.shape
        p = sparse.shape[1]
        n = b * p
        out_tokens = jnp.concatenate([self.obj_score_token[...], self.iou_token[...], self.mask_tokens[...]])
        tokens = jnp.concatenate([jnp.broadcast_to(out_tokens.astype(sparse.dtype), (b, p, *out_tokens.shape)),
                                  sparse], axis=2).reshape(n, -1, D)

        def per_prompt(x):  # (B, ...) -> (B * P, ...), each image repeated for its prompt sets
            return jnp.repeat(x, p, axis=0)

        image = per_prompt(image_embeddings + dense).reshape(n, e_h * e_w, D)
        pe = per_prompt(jnp.broadcast_to(image_pe, (b, e_h, e_w, D))).reshape(n, e_h * e_w, D)
        tokens, image = self.transformer(tokens, image, pe.astype(image.dtype))
        iou_token_out = tokens[:, 1]
        mask_tokens_out = tokens[:, 2:2 + self.num_mask_tokens]  # (N, M, D)

        gelu = activation("gelu")
        feat_s0, feat_s1 = (per_prompt(f) for f in high_res_features)
        x = image.reshape(n, e_h, e_w, D)
        x = gelu(self.upscale_layer_norm(self.upscale_conv1(x) + feat_s1))
        x = gelu(self.upscale_conv2(x) + feat_s0)  # (N, 4e, 4e, D/8)
        hyper = jnp.stack([getattr(self, f"hypernetwork_mlp_{m}")(mask_tokens_out[:, m])
                           for m in range(self.num_mask_tokens)], axis=1)  # (N, M, D/8)
        masks = jnp.einsum("nmc,nhwc->nmhw", hyper, x, precision=self.precision)
        iou = self.iou_prediction_head(iou_token_out)  # (N, M)
        obj = self.pred_obj_score_head(tokens[:, 0])  # (N, 1)

        c = self.config
        if multimask_output:
            masks, iou, sel_tokens = masks[:, 1:], iou[:, 1:], mask_tokens_out[:, 1:]
        elif c.dynamic_multimask_via_stability and not training:
            masks, iou = dynamic_multimask(masks, iou, c.dynamic_multimask_stability_delta,
                                           c.dynamic_multimask_stability_thresh)
            sel_tokens = mask_tokens_out[:, :1]  # the reference keeps token 0 even where it falls back
        else:
            masks, iou, sel_tokens = masks[:, :1], iou[:, :1], mask_tokens_out[:, :1]
        k = masks.shape[1]
        return DecoderOutput(masks.reshape(b, p, k, *masks.shape[2:]), iou.reshape(b, p, k),
                             sel_tokens.reshape(b, p, k, D), obj.reshape(b, p, 1))


def stability_scores(mask_logits: jax.Array, delta: float) -> jax.Array:
    """(..., H, W) -> (...): |logits > delta| / |logits > -delta| (1 where the latter is empty)."""
    inter = jnp.sum(mask_logits > delta, axis=(-2, -1)).astype(jnp.float32)
    union = jnp.sum(mask_logits > -delta, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def dynamic_multimask(masks: jax.Array, iou: jax.Array, delta: float, thresh: float) -> tuple[jax.Array, jax.Array]:
    """masks (N, M, H, W), iou (N, M) -> (N, 1, H, W), (N, 1): mask 0 where it is stable, else the multimask
    output (1..M-1) with the highest predicted IoU."""
    best = jnp.argmax(iou[:, 1:], axis=-1)  # (N,)
    best_mask = jnp.take_along_axis(masks[:, 1:], best[:, None, None, None], axis=1)
    best_iou = jnp.take_along_axis(iou[:, 1:], best[:, None], axis=1)
    stable = stability_scores(masks[:, 0], delta) >= thresh  # (N,)
    return (jnp.where(stable[:, None, None, None], masks[:, :1], best_mask),
            jnp.where(stable[:, None], iou[:, :1], best_iou))
