"""`VirstModel`: a Qwen-VL video LLM + SAM2 + VIRST's fusion modules, for one video and its expressions.

    llm            QwenVLForConditionalGeneration (Qwen3-VL or Qwen2.5-VL), vocabulary holding [SEG]
    sam2           Sam2VideoModel (image encoder, prompt encoder / mask decoder, memory)
    seg_prompter   SegPrompter: [SEG] hidden states x SAM2 features -> per-frame prompts
    initial_fusion InitialFusion (only when `initial_fusion.enabled`): [SEG] input embeddings x SAM2 features

One forward (`forward`, traceable) takes the LM rows about ONE video (row b = one referring expression = one
object, with its Q [SEG] tokens in the answer, teacher-forced) and that video's T_seg SAM2-preprocessed frames:

    SAM2 image embeddings (T, e, e, W) of the frames (top FPN level, SAM2's `vision_features`)
    [initial fusion of the [SEG] input embeddings]
    LLM -> logits (B, L, V), last-layer hidden states -> [SEG] hidden (B, Q, D)
    SegPrompter -> prompts (B, T, Q, C), frame scores (B, T)
    anchors = tdau.anchor_frames_for(T) (static); anchor prompts (B, A, Q, C)
    [tracking: tdau.segment_with_anchors -> low-res mask logits, IoU and object scores for every frame]
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from stvl_jax.errors import InputError
from stvl_jax.models.qwen_vl.inputs import ModelInputs
from stvl_jax.models.qwen_vl.model import QwenVLForConditionalGeneration
from stvl_jax.models.sam2.video_model import Sam2VideoModel
from stvl_jax.models.virst.config import VirstConfig
from stvl_jax.models.virst.initial_fusion import InitialFusion
from stvl_jax.models.virst.seg_prompter import SegPrompter
from stvl_jax.models.virst.seg_tokens import gather_rows, scatter_rows, seg_positions


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VirstOutput:
    logits: jax.Array | None  # (B, L, V) (None with compute_logits=False)
    seg_hidden: jax.Array  # (B, Q, D_llm) last-layer hidden states at the [SEG] tokens
    seg_valid: jax.Array  # (B, Q) bool: the row has that [SEG]
    prompts: jax.Array  # (B, T, Q, C) SegPrompter output for every segmentation frame
    frame_scores: jax.Array  # (B, T)
    anchor_prompts: jax.Array  # (B, A, Q, C) prompts of the anchor frames
    anchor_frames: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    tracking: object | None = None  # tdau.TdauOutput when tracked


def _tdau():
    """The TDAU module (anchor choice and SAM2 propagation). Imported here, the one place the model reaches it."""
    from stvl_jax.models.virst import tdau

    return tdau


class VirstModel(nnx.Module):
    def __init__(self, config: VirstConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, precision=None,
                 remat: str = "none", scan_layers: bool = True, preprocessing=None, rngs: nnx.Rngs):
        """preprocessing: the LLM's `PreprocessConfig` (None: the family default)."""
        if config.seg.token_id is None:
            raise InputError("VirstModel needs seg.token_id (the [SEG] row of the vocabulary; see "
                             "seg_tokens.add_seg_token)")
        self.config = config
        self.dtype = dtype
        self.llm = QwenVLForConditionalGeneration(config.llm, dtype=dtype, param_dtype=param_dtype,
                                                  precision=precision, remat=remat, scan_layers=scan_layers,
                                                  preprocessing=preprocessing,
                                                  rngs=rngs)
        self.sam2 = Sam2VideoModel(config.sam2, dtype=dtype, precision=precision, rngs=rngs)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.seg_prompter = SegPrompter(config, **kw)
        if config.initial_fusion.enabled:
            self.initial_fusion = InitialFusion(config, **kw)

    def image_embeddings(self, pixel_values: jax.Array) -> jax.Array:
        """(T, 3, S, S) SAM2-preprocessed frames -> (T, e, e, W): the top FPN level before the no-memory
        embedding (upstream `forward_image(...)["vision_features"]`), what both fusions read."""
        levels, _ = self.sam2.image.image_features(pixel_values)
        return levels[-1]

    def seg_count(self, num_frames: int) -> int:
        """[SEG] tokens per expression: `per_video`, or `per_image` for a single frame."""
        return self.config.seg.per_image if num_frames == 1 else self.config.seg.per_video

    def forward(self, inputs: ModelInputs, pixel_values: jax.Array, *, track: bool = True,
                multimask: bool | None = None, compute_logits: bool = True,
                dropout_rng: jax.Array | None = None, features: tuple[jax.Array, ...] | None = None,
                anchor_frames: tuple[int, ...] | jax.Array | None = None) -> VirstOutput:
        """inputs: the LM rows about one video (B = objects); pixel_values (T_seg, 3, S, S) SAM2-preprocessed
        frames of that video. track: run `tdau.segment_with_anchors` on the anchor prompts (multimask: None =
        the config's `anchors.multimask_eval`). features: those frames' SAM2 image features
        (`sam2.tracker_step.frame_features`: feat_s0, feat_s1, top, top_pos, each (T_seg, ...)) when the caller
        already encoded them (the predictor encodes every video frame once); None encodes pixel_values here.
        anchor_frames: the frames that get the decoded prompts: None = the evaluation rule
        (`tdau.anchor_frames_for(T_seg)`, static); a tuple (static; e.g. every frame, as VIRST's default training);
        or a (A,) int array (traceable: VIRST's random training anchors, `tdau.train_anchor_frames`; training order
        only, `out.anchor_frames` is then ())."""
        cfg = self.config
        t = pixel_values.shape[0]
        if pixel_values.ndim != 4 or t > cfg.anchors.max_seg_frames:
            raise InputError(f"SAM2 pixel_values have shape {tuple(pixel_values.shape)}; expected (T_seg <= "
                             f"{cfg.anchors.max_seg_frames}, 3, {cfg.sam2.image.image_size}, "
                             f"{cfg.sam2.image.image_size})")
        q = self.seg_count(t)
        if features is None:  # encoded once: fusion and tracking
            levels, pos_enc = self.sam2.image.image_features(pixel_values)
            features = (*levels, pos_enc[-1])
        top = features[-2]  # = image_embeddings(pixel_values)
        pos, valid = seg_positions(inputs.input_ids, cfg.seg.token_id, q)
        embeds, deepstack = self.llm.embed(inputs)
        if cfg.initial_fusion.enabled:
            fused = self.initial_fusion(gather_rows(embeds, pos), top)
            embeds = scatter_rows(embeds, pos, fused, valid)
        hidden, _ = self.llm.language_model(embeds, inputs.position_ids, inputs.attention_mask, deepstack, None)
        logits = self.llm.logits(hidden) if compute_logits else None
        seg_hidden = gather_rows(hidden, pos)
        prompts, scores = self.seg_prompter(seg_hidden, top, valid, dropout_rng=dropout_rng)
        tdau = _tdau()
        if anchor_frames is None:
            anchor_frames = tdau.anchor_frames_for(t)
        if isinstance(anchor_frames, jax.Array):
            anchors, track_anchors = (), anchor_frames.astype(jnp.int32)
        else:
            anchors = track_anchors = tuple(int(a) for a in anchor_frames)
        anchor_prompts = prompts[:, jnp.asarray(track_anchors)]
        tracking = None
        if track:
            mm = cfg.anchors.multimask_eval if multimask is None else multimask
            tracking = tdau.segment_with_anchors(self.sam2, pixel_values, track_anchors, anchor_prompts, multimask=mm,
                                                 features=tuple(features))
        return VirstOutput(logits, seg_hidden, valid, prompts, scores, anchor_prompts, anchors, tracking)


def abstract_virst_model(config: VirstConfig, **options) -> VirstModel:
    """The model described with `nnx.eval_shape` (nothing allocated): the load target."""
    return nnx.eval_shape(lambda: VirstModel(config, rngs=nnx.Rngs(0), **options))


def init_virst_model(config: VirstConfig, *, seed: int = 0, mesh=None, **options) -> VirstModel:
    """Freshly initialised model, drawn in one jitted program (laid out on `mesh` by the rules table)."""
    from stvl_jax.models.sam2.image_model import init_jitted

    return init_jitted(lambda rngs: VirstModel(config, rngs=rngs, **options), seed, mesh)
