"""VIRST's anchors and TDAU (temporal dynamic anchor updater) on the Flax SAM2: decoded [SEG] prompts on anchor
frames, SAM2 memory propagation over every frame. Pure, jittable (anchor frames static, or traced in training),
differentiable.

    anchors = anchor_frames_for(T)                       # round(linspace(0, T - 1, max(1, T // 4)))
    anchors = train_anchor_frames(T, rng)                # training: sorted(randperm(T)[:min(3, T)])
    out = segment_with_anchors(sam2, pixel_values, anchors, prompts, multimask=not training)
    pixel_values (T, 3, S, S) SAM2-preprocessed; prompts (N_obj, A, Q, hidden) (A = len(anchors))
    out.low_res_logits (N_obj, T, 4e, 4e); out.iou (N_obj, T); out.object_score_logits (N_obj, T)

Mechanics of AIDASLab/VIRST's code (`model/sam2/sam2_virst.py`, `model/VIRST.py`, its Meta `sam2_base.py`);
where the code and the paper's wording differ, this follows the code:

- prompts: on an anchor the Q vectors *are* the mask decoder's sparse prompt embeddings (no point embedding, no
  padding token); dense = the no-mask embedding (`_forward_sam_heads_with_embedding`).
- order, evaluation (`video_propagate`): every anchor first, in frame order, each an initial conditioning frame
  (no memory: top features + no_memory_embedding, SAM2.1's directly_add_no_mem_embed); then ONE forward pass
  from frame 0 (`propagate_in_video(start_frame_idx=0)`, no reverse pass) where anchors keep their output and
  the other frames are tracked. (`anchor_frames_for` always puts an anchor on frame 0; with a later first anchor
  the frames before it are tracked on the future anchors' spatial memories, as upstream.)
- order, training (`forward_tracking`): the first anchor, then every other frame in time order; a later anchor
  is an initial conditioning frame when reached, so frames before it do not see it.
- masks: VIRST's `_use_multimask` is `not training`: evaluation decodes 3 masks on every frame (anchors too) and
  keeps the one with the highest predicted IoU; training decodes mask 0 only. SAM2's dynamic-multimask-via-
  stability fallback acts only on single-mask *inference* output, which VIRST never runs (its build enables it,
  but multimask output bypasses it): here it applies with multimask=False, training=False.
- memory (Meta `_prepare_memory_conditioned_features`): the `max_anchors_in_attn` = 3 (VIRST's
  max_cond_frames_in_attn) anchors closest in time (nearest before, nearest at/after, then the closest others,
  ties to the earlier inserted) with temporal embedding row num_maskmem - 1; the previous num_maskmem - 1
  frames (VIRST: 7 - 1 = 6; "FIFO") at rows 0.., taken when tracked or an unselected anchor (a selected anchor
  among them leaves its slot empty: the paper's "6 most recent non-anchor frames" is the previous 6 *frame
  indices*); object pointers (Meta's rule, `memory_bank` meta_pointers): the selected anchors' (past ones only
  at evaluation) and those of the previous min(T, max_object_pointers_in_encoder) - 1 = 15 frames that are
  tracked or unselected anchors. The memory-bank sizes come from the SAM2 config (VIRST: num_maskmem 7,
  max_object_pointers_in_encoder 16, the SAM2.1 values).
- new memories: from sigmoid(mask logits) on every frame (VIRST's SAM2 leaves
  binarize_mask_from_pts_for_mem_enc off), + the occlusion embedding where the object is absent; stored in
  bf16 at evaluation (`maskmem_features.to(torch.bfloat16)`), fp32 in training (`bank_dtype`).
- frames: VIRST evaluates on the whole video (anchors mapped to video frame ids) and trains on its selected
  frames only, indices local to that subset: 3 random keyframes (`train_anchor_frames`, VIRST's
  `select_keyframes`); by default (`use_cond_frames` False) ALL of them anchors (`cond_frames = arange(T)`: each
  gets its own decoded prompts, nothing is tracked); with `use_cond_frames` the keyframes + propagation frames
  around them. The caller passes the frames and picks the anchors (`anchor_frames_for` is the evaluation rule).
  Training anchors may be a traced (A,) array, so a new draw per step reuses one compiled program; evaluation
  anchors are static.
- not modelled: the memory-attention dropout of VIRST's training forward.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from stvl_jax.errors import InputError
from stvl_jax.models.sam2.memory_bank import MemoryBank, condition_on_memory, select_memory_frames
from stvl_jax.models.sam2.position import sine_2d
from stvl_jax.models.sam2.tracker_step import NO_OBJ_SCORE, frame_features

MAX_ANCHORS_IN_ATTN = 3  # VIRST `max_cond_frames_in_attn` (utils/argument.py)
TRAIN_ANCHORS = 3  # VIRST `select_keyframes` in training: num_cond = min(3, T) (model/VIRST.py)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TdauOutput:
    """low_res_logits (N_obj, T, 4e, 4e) (NO_OBJ_SCORE where the object is predicted absent); iou (N_obj, T) the
    kept mask's predicted IoU (= the max over the decoded masks); object_score_logits (N_obj, T)."""

    low_res_logits: jax.Array
    iou: jax.Array
    object_score_logits: jax.Array


def anchor_frames_for(t_seg: int) -> tuple[int, ...]:
    """VIRST's evaluation anchors (`select_keyframes(is_evaluation=True)`): torch.linspace(0, T - 1,
    max(1, T // 4)) in float32, rounded half to even (torch `round`)."""
    if t_seg < 1:
        raise InputError(f"anchor_frames_for: t_seg {t_seg} must be >= 1")
    n = max(1, t_seg // 4)
    if n == 1:
        return (0,)
    # torch's CPU linspace kernel: float32 step, start + step * i for the first half, end - step * (n - 1 - i) after
    start, end = np.float32(0), np.float32(t_seg - 1)
    step = (end - start) / np.float32(n - 1)
    i = np.arange(n)
    vals = np.where(i < n // 2, start + step * i.astype(np.float32),
                    end - step * (n - 1 - i).astype(np.float32)).astype(np.float32)
    return tuple(int(v) for v in np.round(vals))


def train_anchor_frames(t_seg: int, rng: np.random.Generator, count: int = TRAIN_ANCHORS) -> tuple[int, ...]:
    """VIRST's training anchors (`select_keyframes(is_evaluation=False)`): min(count, T) distinct frames drawn
    uniformly (upstream `torch.randperm(T)[:3]`, here `rng.permutation(T)`), sorted; (0,) for one frame."""
    if t_seg < 1 or count < 1:
        raise InputError(f"train_anchor_frames: t_seg {t_seg} and count {count} must be >= 1")
    if t_seg == 1:
        return (0,)
    return tuple(sorted(int(f) for f in rng.permutation(t_seg)[:min(count, t_seg)]))


def training_order(num_frames: int, anchor_frames) -> jax.Array:
    """`processing_order(training=True)` for anchors given as a (A,) int array (traced: a new draw per step,
    one compiled program) -> (2, num_frames) int32: frames in order, their anchor index or -1."""
    a = jnp.asarray(anchor_frames, jnp.int32)
    f = jnp.arange(num_frames, dtype=jnp.int32)
    frames = jnp.argsort(jnp.where(f == a[0], -1, f)).astype(jnp.int32)  # the first anchor, then time order
    hit = frames[:, None] == a[None, :]
    return jnp.stack([frames, jnp.where(hit.any(-1), jnp.argmax(hit, -1), -1).astype(jnp.int32)])


def processing_order(num_frames: int, anchor_frames: tuple[int, ...], *, training: bool) -> np.ndarray:
    """-> (2, num_frames) int32: row 0 the frames in VIRST's processing order (module docstring), row 1 their
    anchor index (-1 for a tracked frame). Evaluation: the anchors, then the other frames in time order;
    training: the first anchor, then every other frame (later anchors included) in time order."""
    index = {f: k for k, f in enumerate(anchor_frames)}
    if training:
        frames = [anchor_frames[0]] + [f for f in range(num_frames) if f != anchor_frames[0]]
    else:
        frames = list(anchor_frames) + [f for f in range(num_frames) if f not in index]
    return np.array([frames, [index.get(f, -1) for f in frames]], np.int32)


def memory_schedule(num_frames: int, anchor_frames: tuple[int, ...], bank_cfg, *, training: bool,
                    max_anchors_in_attn: int = MAX_ANCHORS_IN_ATTN) -> list[dict]:
    """Which memories each frame attends to, in processing order (the selection `segment_with_anchors` runs,
    evaluated on the frame kinds alone; for inspection and tests). bank_cfg: a `MemoryBankConfig`. -> one dict
    per processed frame: {"frame", "anchor" (bool: an anchor attends to no memory), "anchors" (selected anchor
    frames), "fifo" {frame: temporal-embedding row}, "pointers" {frame: temporal offset}}."""
    order = processing_order(num_frames, tuple(anchor_frames), training=training)
    bank = MemoryBank.empty(num_frames, 1, 1, 1, dtype=jnp.float32)
    cap = len(anchor_frames)
    rows = []
    for f, k in order.T.tolist():
        entry = {"frame": f, "anchor": k >= 0, "anchors": (), "fifo": {}, "pointers": {}}
        if k < 0:
            (sf, sr, sok), (pf, po, pok), _ = select_memory_frames(
                bank, f, bank_cfg, cond_capacity=cap, num_frames=num_frames, training=training,
                max_cond_frame_num=max_anchors_in_attn, meta_pointers=True)
            sf, sr, sok, pf, po, pok = (np.asarray(x) for x in (sf, sr, sok, pf, po, pok))
            entry["anchors"] = tuple(sorted(int(x) for x in sf[:cap][sok[:cap]]))
            entry["fifo"] = {int(a): int(b) for a, b in zip(sf[cap:][sok[cap:]], sr[cap:][sok[cap:]])}
            entry["pointers"] = {int(a): int(b) for a, b in zip(pf[pok], po[pok])}
        rows.append(entry)
        bank = bank.store(f, jnp.zeros((1, 1)), jnp.zeros((1,)), k >= 0)
    return rows


def _check(cfg, pixel_values, anchor_frames, anchor_prompts) -> None:
    s, d = cfg.image_size, cfg.memory_bank.hidden_dim
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, s, s):
        raise InputError(f"pixel_values has shape {tuple(pixel_values.shape)}; expected (frames, 3, {s}, {s})")
    t = pixel_values.shape[0]
    a = anchor_frames
    if isinstance(a, jax.Array):  # traced values: the host drew them (`train_anchor_frames`)
        if a.ndim != 1 or not a.shape[0] or not jnp.issubdtype(a.dtype, jnp.integer):
            raise InputError(f"anchor_frames is a {a.dtype} array of shape {tuple(a.shape)}; expected (anchors,) "
                             f"integer frame indices")
    elif not a or any(not isinstance(f, (int, np.integer)) for f in a) or list(a) != sorted(set(a)) \
            or a[0] < 0 or a[-1] >= t:
        raise InputError(f"anchor_frames {a} must be strictly increasing frame indices within the {t} frames")
    if anchor_prompts.ndim != 4 or anchor_prompts.shape[1] != len(a) or anchor_prompts.shape[3] != d:
        raise InputError(f"anchor_prompts has shape {tuple(anchor_prompts.shape)}; expected (objects, {len(a)} "
                         f"anchors, queries, {d})")


def _decode(model, pix, high_res, sparse, *, multimask: bool, training: bool):
    """The mask decoder on one frame, one object. pix (1, e, e, D); sparse (1, 1, Q, D) or None (no prompt: one
    "not a point" + padding, as SAM2's tracked frames). -> (low (4e, 4e), iou (), token (D,), obj (1,))."""
    img = model.image
    points, labels = (jnp.zeros((1, 1, 1, 2), jnp.float32), -jnp.ones((1, 1, 1), jnp.int32))
    prompt_sparse, dense = img.prompt_encoder(points, labels, None, None, batch_size=1)
    sparse = prompt_sparse if sparse is None else sparse.astype(prompt_sparse.dtype)
    out = img.mask_decoder(pix, img.image_positional_embeddings()[None], sparse, dense, high_res,
                           multimask_output=multimask, training=training)
    masks, iou, tokens = out.masks[0, 0], out.iou_scores[0, 0], out.mask_tokens[0, 0]
    obj = out.object_score_logits[0, 0]
    masks = jnp.where(obj[0] > 0, masks, NO_OBJ_SCORE)
    best = jnp.argmax(iou)
    return masks[best], iou[best], tokens[best], obj


def _object_pass(model, feats, pos_table, prompts, order, *, kind: str, multimask: bool, training: bool,
                 bank: MemoryBank, num_frames: int, cond_capacity: int, max_anchors: int):
    """One object over `order` (frames (K,), anchor index (K,)), `lax.scan`. kind (static): "anchor" (every slot
    an anchor: no memory attention), "track" (no anchor), "mixed" (training order). -> (bank, (low, iou, obj, f))."""
    cfg = model.config
    s0, s1, top, top_pos = feats
    e, d, m = cfg.embedding_size, cfg.image.vision.fpn_hidden_size, cfg.memory_bank.mem_dim
    emb = model.memory_embeddings
    no_mem = model.image.no_memory_embedding[...]

    def step(bank, slot):
        f, k = slot[0], slot[1]
        is_anchor = k >= 0
        top_f = top[f]
        high_res = (s0[f][None], s1[f][None])
        if kind == "anchor":
            pix = top_f + no_mem.astype(top_f.dtype).reshape(-1)
        else:
            pix = condition_on_memory(model.memory_attention, emb, bank, top_f.reshape(e * e, d),
                                      top_pos[f].reshape(e * e, d), pos_table, f, is_anchor, no_mem,
                                      cond_capacity=cond_capacity, num_frames=num_frames, training=training,
                                      max_cond_frame_num=max_anchors, meta_pointers=True).reshape(e, e, d)
        kw = dict(multimask=multimask, training=training)
        if kind != "track":
            prompted = _decode(model, pix[None], high_res, prompts[jnp.maximum(k, 0)][None, None], **kw)
        if kind != "anchor":
            tracked = _decode(model, pix[None], high_res, None, **kw)
        if kind == "mixed":
            prompted = tuple(jnp.where(is_anchor, a, b) for a, b in zip(prompted, tracked))
        low, iou, token, obj = tracked if kind == "track" else prompted
        size = cfg.image_size
        high = jax.image.resize(low[None, None].astype(jnp.float32), (1, 1, size, size), method="bilinear",
                                antialias=False)[:, 0]  # torch bilinear upsampling, align_corners=False
        memory, _ = model.memory_encoder(top_f[None], emb.mask_for_memory(high, False))
        memory = emb.add_occlusion(memory, obj[None])
        pointer = emb.object_pointer(token[None], obj[None])[0]
        bank = bank.store(f, memory[0].reshape(e * e, m), pointer, is_anchor)
        return bank, (low, iou, obj[0], f)

    return jax.lax.scan(step, bank, jnp.asarray(order.T))


def segment_with_anchors(sam2, pixel_values: jax.Array, anchor_frames: tuple[int, ...] | jax.Array,
                         anchor_prompts: jax.Array, *, multimask: bool, training: bool | None = None, bank_dtype=None,
                         max_anchors_in_attn: int = MAX_ANCHORS_IN_ATTN,
                         features: tuple[jax.Array, ...] | None = None) -> TdauOutput:
    """VIRST's segmentation of every frame from anchor prompts (module docstring). sam2: a `Sam2VideoModel`;
    pixel_values (T, 3, S, S) float32; anchor_frames static, strictly increasing (training only: or a (A,) int
    array of such frames, traced); anchor_prompts (N_obj, A, Q, hidden). multimask: VIRST's evaluation (True) or
    training (False) forward; training (default: not multimask, VIRST's coupling) picks the order, the pointer
    rule and the decoder's training mode; bank_dtype (default bf16 at evaluation, fp32 in training). features:
    the frames' `tracker_step.frame_features` (feat_s0, feat_s1, top, top_pos), each (T, ...), when the caller
    already ran the image encoder (VirstModel does); None computes them here."""
    cfg = sam2.config
    dynamic = isinstance(anchor_frames, jax.Array)
    anchor_frames = anchor_frames if dynamic else tuple(anchor_frames)
    _check(cfg, pixel_values, anchor_frames, anchor_prompts)
    training = (not multimask) if training is None else training
    if dynamic and not training:
        raise InputError("segment_with_anchors: anchor_frames as an array need the training order (training=True); "
                         "evaluation anchors are a static tuple")
    anchor_frames = anchor_frames if dynamic else tuple(int(f) for f in anchor_frames)
    bank_dtype = (jnp.float32 if training else jnp.bfloat16) if bank_dtype is None else bank_dtype
    t, a = pixel_values.shape[0], len(anchor_frames)
    e, m = cfg.embedding_size, cfg.memory_bank.mem_dim
    feats = frame_features(sam2, pixel_values) if features is None else tuple(features)
    pos_table = jnp.asarray(sine_2d(e, e, m).reshape(e * e, m), feats[2].dtype)
    bank = MemoryBank.empty(t, e * e, m, cfg.memory_bank.hidden_dim, dtype=bank_dtype)
    order = training_order(t, anchor_frames) if dynamic else processing_order(t, anchor_frames, training=training)
    kw = dict(multimask=multimask, training=training, num_frames=t, cond_capacity=a, max_anchors=max_anchors_in_attn)

    def one_object(prompts):
        if training:  # every frame an anchor (VIRST's default training): no memory attention, no tracked decode
            kind = "anchor" if a == t else "mixed"
            _, outs = _object_pass(sam2, feats, pos_table, prompts, order, kind=kind, bank=bank, **kw)
        else:  # anchors (no memory attention), then the tracked frames
            b, first = _object_pass(sam2, feats, pos_table, prompts, order[:, :a], kind="anchor", bank=bank, **kw)
            if t == a:
                outs = first
            else:
                _, rest = _object_pass(sam2, feats, pos_table, prompts, order[:, a:], kind="track", bank=b, **kw)
                outs = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), first, rest)
        low, iou, obj, _ = outs
        inv = jnp.argsort(order[0]) if dynamic else np.argsort(order[0])  # slots -> frame order
        return low[inv], iou[inv], obj[inv]

    low, iou, obj = jax.vmap(one_object)(anchor_prompts)
    return TdauOutput(low, iou, obj)
