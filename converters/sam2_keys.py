"""Declarative HF `Sam2Model` <-> stvl-jax key map for SAM2's image path, plus the per-direction hooks.

Each `Entry` ties one HF tensor name to one of our parameter paths ("/"-joined nnx state paths) and a hook that
knows both directions:

    linear   HF (out, in)               <-> ours (in..., out...)   transpose, heads split out by reshape
    conv     HF (O, I, kh, kw)          <-> ours (kh, kw, I, O)    Conv2d
    convt    HF (I, O, kh, kw)          <-> ours (kh, kw, I, O)    ConvTranspose2d
    chw      HF (1, C, h, w)            <-> ours (h, w, C)         Hiera's position tables
    vector   HF (n...)                  <-> ours (any shape of the same size)

An entry with `layers` stands for HF's `...layers.{i}...` tensors gathered on our leading layer axis (nnx
stacks). `entries_to_ours` / `entries_to_hf` convert through any entry list (the video map,
`converters.sam2_video_keys`, uses the same `Entry` and hooks); `hf_to_ours` / `ours_to_hf` convert whole
`Sam2Model` state dicts (numpy), checking names and shapes both ways;
`load_hf_state` writes an HF state dict into a built (or abstract) `Sam2ImageModel`; `load_hf_image_model` reads an
HF checkpoint directory. The memory/video tensors of a
`sam2_video` checkpoint are not in this table (the video key map owns them).
"""

from __future__ import annotations

import dataclasses
import re

import jax.numpy as jnp
import numpy as np
from flax import nnx

from converters.hf_checkpoint import HFCheckpoint
from stvl_jax.errors import CheckpointError
from stvl_jax.models.sam2.config import Sam2Config, from_hf
from stvl_jax.nn.params import flat_params

LINEAR, CONV, CONVT, CHW, VECTOR = "linear", "conv", "convt", "chw", "vector"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One HF tensor (or, with `layers`, the HF tensors `hf.format(i=i)` of a stack) <-> one of our params."""

    hf: str  # HF name; "{i}" is the layer index when `layers` is set
    ours: str  # "/"-joined nnx state path
    hook: str  # LINEAR | CONV | CONVT | CHW | VECTOR
    hf_shape: tuple[int, ...]  # one HF tensor's shape (checked on import, produced on export)
    layers: int | None = None  # stacked: our param has a leading axis of this many layers

    def hf_names(self) -> list[str]:
        return [self.hf.format(i=i) for i in range(self.layers)] if self.layers else [self.hf]


def key_map(config: Sam2Config) -> list[Entry]:
    E: list[Entry] = []

    def add(hf, ours, hook, shape):
        E.append(Entry(hf, ours, hook, tuple(int(s) for s in shape)))

    def linear(hf, ours, n_in, n_out, bias=True):
        add(hf + ".weight", ours + "/kernel", LINEAR, (n_out, n_in))
        if bias:
            add(hf + ".bias", ours + "/bias", VECTOR, (n_out,))

    def conv(hf, ours, n_in, n_out, k, hook=CONV):
        kh, kw = (k, k) if isinstance(k, int) else k
        add(hf + ".weight", ours + "/kernel", hook, (n_out, n_in, kh, kw) if hook == CONV else (n_in, n_out, kh, kw))
        add(hf + ".bias", ours + "/bias", VECTOR, (n_out,))

    def norm(hf, ours, n):
        add(hf + ".weight", ours + "/weight", VECTOR, (n,))
        add(hf + ".bias", ours + "/bias", VECTOR, (n,))

    def feed_forward(hf, ours, n_in, hidden, n_out, layers):
        linear(hf + ".proj_in", ours + "/proj_in", n_in, hidden)
        for j in range(layers - 2):
            linear(hf + f".layers.{j}", ours + f"/layer_{j}", hidden, hidden)
        linear(hf + ".proj_out", ours + "/proj_out", hidden, n_out)

    vc, bc, pc, mc = config.vision, config.vision.backbone, config.prompt_encoder, config.mask_decoder
    D = vc.fpn_hidden_size
    add("no_memory_embedding", "no_memory_embedding", VECTOR, (1, 1, D))
    add("shared_image_embedding.positional_embedding", "shared_image_embedding/positional_embedding", VECTOR,
        (2, pc.hidden_size // 2))

    # ---- Hiera
    hb, ob = "vision_encoder.backbone.", "vision_encoder/backbone/"
    C0 = bc.hidden_size
    conv(hb + "patch_embed.projection", ob + "patch_embed", bc.num_channels, C0, bc.patch_kernel_size)
    add(hb + "pos_embed", ob + "pos_embed", CHW, (1, C0, *bc.window_positional_embedding_background_size))
    w0 = bc.window_size_per_stage[0]
    add(hb + "pos_embed_window", ob + "pos_embed_window", CHW, (1, C0, w0, w0))
    i = 0
    for stage, n in enumerate(bc.blocks_per_stage):
        for j in range(n):
            dim = bc.embed_dim_per_stage[stage - 1] if stage > 0 and j == 0 else bc.embed_dim_per_stage[stage]
            out = bc.embed_dim_per_stage[stage]
            h, o = hb + f"blocks.{i}.", ob + f"block_{i}/"
            norm(h + "layer_norm1", o + "layer_norm1", dim)
            linear(h + "attn.qkv", o + "attn/qkv", dim, 3 * out)
            linear(h + "attn.proj", o + "attn/proj", out, out)
            norm(h + "layer_norm2", o + "layer_norm2", out)
            hidden = int(out * bc.mlp_ratio)
            linear(h + "mlp.proj_in", o + "mlp/fc1", out, hidden)
            linear(h + "mlp.proj_out", o + "mlp/fc2", hidden, out)
            if dim != out:
                linear(h + "proj", o + "proj", dim, out)
            i += 1

    # ---- FPN neck
    for k, channels in enumerate(vc.backbone_channel_list):
        conv(f"vision_encoder.neck.convs.{k}", f"vision_encoder/neck/conv_{k}", channels, D, vc.fpn_kernel_size)

    # ---- prompt encoder
    hp, op = "prompt_encoder.", "prompt_encoder/"
    P = pc.hidden_size
    add(hp + "shared_embedding.positional_embedding", op + "shared_embedding/positional_embedding", VECTOR,
        (2, P // 2))
    mi = pc.mask_input_channels
    conv(hp + "mask_embed.conv1", op + "mask_embed/conv1", 1, mi // 4, 2)
    conv(hp + "mask_embed.conv2", op + "mask_embed/conv2", mi // 4, mi, 2)
    conv(hp + "mask_embed.conv3", op + "mask_embed/conv3", mi, P, 1)
    norm(hp + "mask_embed.layer_norm1", op + "mask_embed/layer_norm1", mi // 4)
    norm(hp + "mask_embed.layer_norm2", op + "mask_embed/layer_norm2", mi)
    add(hp + "no_mask_embed.weight", op + "no_mask_embed", VECTOR, (1, P))
    add(hp + "point_embed.weight", op + "point_embed", VECTOR, (pc.num_point_embeddings, P))
    add(hp + "not_a_point_embed.weight", op + "not_a_point_embed", VECTOR, (1, P))

    # ---- mask decoder
    hm, om = "mask_decoder.", "mask_decoder/"
    M = mc.num_multimask_outputs + 1
    internal = D // mc.attention_downsample_rate
    add(hm + "iou_token.weight", om + "iou_token", VECTOR, (1, D))
    add(hm + "mask_tokens.weight", om + "mask_tokens", VECTOR, (M, D))
    add(hm + "obj_score_token.weight", om + "obj_score_token", VECTOR, (1, D))

    def attention(hf, ours, inner):
        for p in ("q", "k", "v"):
            linear(f"{hf}.{p}_proj", f"{ours}/{p}_proj", D, inner)
        linear(hf + ".o_proj", ours + "/o_proj", inner, D)

    ht, ot = hm + "transformer.", om + "transformer/"
    for layer in range(mc.num_hidden_layers):
        h, o = ht + f"layers.{layer}.", ot + f"layer_{layer}/"
        attention(h + "self_attn", o + "self_attn", D)
        attention(h + "cross_attn_token_to_image", o + "cross_attn_token_to_image", internal)
        attention(h + "cross_attn_image_to_token", o + "cross_attn_image_to_token", internal)
        feed_forward(h + "mlp", o + "mlp", D, mc.mlp_dim, D, mc.num_hidden_layers)
        for n in range(1, 5):
            norm(h + f"layer_norm{n}", o + f"layer_norm{n}", D)
    attention(ht + "final_attn_token_to_image", ot + "final_attn_token_to_image", internal)
    norm(ht + "layer_norm_final_attn", ot + "layer_norm_final_attn", D)
    conv(hm + "upscale_conv1", om + "upscale_conv1", D, D // 4, 2, CONVT)
    conv(hm + "upscale_conv2", om + "upscale_conv2", D // 4, D // 8, 2, CONVT)
    norm(hm + "upscale_layer_norm", om + "upscale_layer_norm", D // 4)
    for m in range(M):
        feed_forward(hm + f"output_hypernetworks_mlps.{m}", om + f"hypernetwork_mlp_{m}", D, D, D // 8, 3)
    feed_forward(hm + "iou_prediction_head", om + "iou_prediction_head", D, mc.iou_head_hidden_dim, M,
                 mc.iou_head_depth)
    conv(hm + "conv_s0", om + "conv_s0", D, D // 8, 1)
    conv(hm + "conv_s1", om + "conv_s1", D, D // 4, 1)
    feed_forward(hm + "pred_obj_score_head", om + "pred_obj_score_head", D, D, 1, 3)
    return E


# ------------------------------------------------------------------------------------------------- hooks
def to_ours(hook: str, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One HF tensor -> our array of `shape`."""
    if hook == LINEAR:
        y = x.T
    elif hook == CONV:
        y = x.transpose(2, 3, 1, 0)
    elif hook == CONVT:
        y = x.transpose(2, 3, 0, 1)
    elif hook == CHW:
        y = x[0].transpose(1, 2, 0)
    elif hook == VECTOR:
        y = x
    else:
        raise ValueError(f"unknown hook {hook!r}")
    return np.ascontiguousarray(y).reshape(shape)


def to_hf(hook: str, y: np.ndarray, hf_shape: tuple[int, ...]) -> np.ndarray:
    """Our array -> the HF tensor of `hf_shape` (inverse of `to_ours`)."""
    if hook == LINEAR:
        x = y.reshape(hf_shape[1], hf_shape[0]).T
    elif hook == CONV:
        x = y.transpose(3, 2, 0, 1)
    elif hook == CONVT:
        x = y.transpose(2, 3, 0, 1)
    elif hook == CHW:
        x = y.transpose(2, 0, 1)[None]
    elif hook == VECTOR:
        x = y
    else:
        raise ValueError(f"unknown hook {hook!r}")
    return np.ascontiguousarray(x).reshape(hf_shape)


def entries_to_ours(entries: list[Entry], hf_state: dict[str, np.ndarray], our_shapes: dict[str, tuple[int, ...]],
                    *, ignore_unmapped: bool = False, what: str = "SAM2") -> dict[str, np.ndarray]:
    """HF tensors (name -> array) -> {our path: array} through `entries` (stacked entries gather their layers).
    Missing tensors, shape mismatches, params without a tensor and (unless `ignore_unmapped`) HF tensors outside
    the entries raise `CheckpointError` naming them."""
    missing = [n for e in entries for n in e.hf_names() if n not in hf_state]
    if missing:
        raise CheckpointError(f"{what} checkpoint lacks {len(missing)} tensor(s), e.g. {missing[:3]}")
    if not ignore_unmapped:
        extra = sorted(set(hf_state) - {n for e in entries for n in e.hf_names()})
        if extra:
            raise CheckpointError(f"{what} checkpoint has {len(extra)} tensor(s) the model does not know, "
                                  f"e.g. {extra[:3]}")
    out = {}
    for e in entries:
        if e.ours not in our_shapes:
            raise CheckpointError(f"{what} key map names {e.ours!r}, which the model does not have")
        shape = our_shapes[e.ours]
        parts = []
        for name in e.hf_names():
            x = np.asarray(hf_state[name])
            if tuple(x.shape) != e.hf_shape:
                raise CheckpointError(f"{what} tensor {name!r} has shape {tuple(x.shape)}, the config expects "
                                      f"{e.hf_shape}")
            parts.append(to_ours(e.hook, x, shape[1:] if e.layers else shape))
        out[e.ours] = np.stack(parts) if e.layers else parts[0]
    unset = sorted(set(our_shapes) - set(out))
    if unset:
        raise CheckpointError(f"{len(unset)} model parameter(s) have no {what} checkpoint tensor, e.g. {unset[:3]}")
    return out


def entries_to_hf(entries: list[Entry], ours) -> dict[str, np.ndarray]:
    """{our path: array} (or a callable path -> array) -> {HF name: tensor}, the inverse of `entries_to_ours`."""
    get = ours if callable(ours) else ours.__getitem__
    out = {}
    for e in entries:
        value = np.asarray(get(e.ours))
        for i, name in enumerate(e.hf_names()):
            out[name] = to_hf(e.hook, value[i] if e.layers else value, e.hf_shape)
    return out


def prefixed(entries: list[Entry], prefix: str) -> list[Entry]:
    """The entries under our path `prefix`, with it stripped (a sub-module built alone)."""
    return [dataclasses.replace(e, ours=e.ours[len(prefix):]) for e in entries if e.ours.startswith(prefix)]


def hf_to_ours(config: Sam2Config, hf_state: dict[str, np.ndarray], our_shapes: dict[str, tuple[int, ...]],
               *, ignore_unmapped: bool = False, prefix: str = "") -> dict[str, np.ndarray]:
    """HF `Sam2Model` state dict (name -> array) -> {our flat key: array} (see `entries_to_ours`).

    prefix: convert only the entries under this path of ours (e.g. "vision_encoder/" for a `VisionEncoder`
    built alone), keys returned without it; HF tensors of the other parts are then ignored."""
    return entries_to_ours(prefixed(key_map(config), prefix), hf_state, our_shapes,
                           ignore_unmapped=ignore_unmapped or bool(prefix))


def ours_to_hf(config: Sam2Config, ours: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{our flat key: array} -> HF state dict."""
    return entries_to_hf(key_map(config), ours)


def load_hf_state(model: nnx.Module, config: Sam2Config, hf_state: dict[str, np.ndarray], *,
                  ignore_unmapped: bool = False, prefix: str = "") -> nnx.Module:
    """Write an HF `Sam2Model` state dict (numpy arrays) into `model` (in place, keeping each param's dtype);
    `prefix` as in `hf_to_ours` (a sub-module built alone)."""
    params = flat_params(model)
    shapes = {k: tuple(v.get_value().shape) for k, v in params.items()}
    values = hf_to_ours(config, hf_state, shapes, ignore_unmapped=ignore_unmapped, prefix=prefix)
    for k, v in params.items():
        v.set_value(jnp.asarray(values[k], dtype=v.get_value().dtype))
    return model


def model_to_hf(model: nnx.Module, config: Sam2Config) -> dict[str, np.ndarray]:
    """HF `Sam2Model` state dict (numpy) of a model."""
    return ours_to_hf(config, {k: np.asarray(v.get_value()) for k, v in flat_params(model).items()})


# Meta's `sam2` package names the Hiera trunk's tensors differently (`image_encoder.trunk.*` in its checkpoints)
_META_TRUNK_RENAMES = ((r"^patch_embed\.proj\.", "patch_embed.projection."), (r"\.norm1\.", ".layer_norm1."),
                       (r"\.norm2\.", ".layer_norm2."), (r"\.mlp\.layers\.0\.", ".mlp.proj_in."),
                       (r"\.mlp\.layers\.1\.", ".mlp.proj_out."))


def meta_trunk_to_hf(name: str, meta_prefix: str = "image_encoder.trunk.") -> str:
    """The transformers name (`vision_encoder.backbone.*`) of a tensor of Meta's `hieradet.Hiera` (its
    state-dict name, under `meta_prefix` in a full SAM2 checkpoint)."""
    if not name.startswith(meta_prefix):
        raise CheckpointError(f"{name!r} is not a Hiera trunk tensor (expected the prefix {meta_prefix!r})")
    name = name[len(meta_prefix):]
    for pattern, repl in _META_TRUNK_RENAMES:
        name = re.sub(pattern, repl, name)
    return "vision_encoder.backbone." + name


_META_RENAMES = (  # Meta `SAM2Base` image-path names -> transformers names (after the trunk's own renames)
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^sam_prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^sam_prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^sam_prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^sam_prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^sam_prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^sam_prompt_encoder\.(no_mask_embed|not_a_point_embed)\.", r"prompt_encoder.\1."),
    (r"^sam_mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^sam_mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^sam_mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"\.out_proj\.", ".o_proj."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"(transformer\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
)
_META_MLP = re.compile(r"^(mask_decoder\.(?:transformer\.layers\.\d+\.mlp|output_hypernetworks_mlps\.\d+|"
                       r"iou_prediction_head|pred_obj_score_head))\.layers\.(\d+)\.(weight|bias)$")


def meta_image_to_hf(meta_state: dict[str, np.ndarray], config: Sam2Config
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Meta `sam2` checkpoint tensors (`SAM2Base` state dict, the "model" dict of `sam2.1_hiera_*.pt`) ->
    (transformers-named image-path tensors, the other tensors untouched: memory attention/encoder, pointers...).

    Beyond renames: the four `point_embeddings.{i}` (1, D) rows stack into `point_embed` (4, D), and the one
    Fourier matrix (`pe_layer`) fills both of transformers' copies. MLP `layers.{j}` become proj_in / layers.{j-1}
    / proj_out by the MLP's depth."""
    depth = {"iou_prediction_head": config.mask_decoder.iou_head_depth, "pred_obj_score_head": 3,
             "output_hypernetworks_mlps": 3, "mlp": config.mask_decoder.num_hidden_layers}
    hf, rest, points = {}, {}, {}
    for name, x in meta_state.items():
        if name.startswith("image_encoder.trunk."):
            hf[meta_trunk_to_hf(name)] = x
            continue
        if name == "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix":
            hf["prompt_encoder.shared_embedding.positional_embedding"] = x
            hf["shared_image_embedding.positional_embedding"] = x
            continue
        m = re.match(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$", name)
        if m:
            points[int(m.group(1))] = x
            continue
        if not name.startswith(("image_encoder.neck.", "no_mem_embed", "sam_prompt_encoder.", "sam_mask_decoder.")):
            rest[name] = x
            continue
        new = name
        for pattern, repl in _META_RENAMES:
            new = re.sub(pattern, repl, new)
        m = _META_MLP.match(new)
        if m:
            prefix, j, kind = m.group(1), int(m.group(2)), m.group(3)
            parts = prefix.split(".")  # ...mlp | ...output_hypernetworks_mlps.{m} | ...iou_prediction_head
            n = depth[parts[-2] if parts[-1].isdigit() else parts[-1]]
            part = "proj_in" if j == 0 else "proj_out" if j == n - 1 else f"layers.{j - 1}"
            new = f"{prefix}.{part}.{kind}"
        hf[new] = x
    if points:
        if sorted(points) != list(range(len(points))):
            raise CheckpointError(f"Meta SAM2 checkpoint has point_embeddings {sorted(points)}; expected 0..n-1")
        hf["prompt_encoder.point_embed.weight"] = np.concatenate([points[i] for i in sorted(points)], axis=0)
    return hf, rest


def build_from_hf_state(build, config: Sam2Config, hf_state: dict[str, np.ndarray], *, prefix: str = "",
                        ignore_unmapped: bool = False) -> nnx.Module:
    """`build()` (a module constructor) described abstractly with `nnx.eval_shape` — nothing is drawn at random
    — then filled from an HF state dict."""
    model = nnx.eval_shape(build)
    return load_hf_state(model, config, hf_state, prefix=prefix, ignore_unmapped=ignore_unmapped)


def load_hf_image_model(path, *, dtype=jnp.float32, precision=None, allow_pickle: bool = False):
    """An HF SAM2 checkpoint directory (config.json + safetensors; model_type `sam2`, or `sam2_video`, whose
    memory tensors are left to the video loader) -> (Sam2Config, the Flax `Sam2ImageModel` with its weights)."""
    from stvl_jax.models.sam2.image_model import Sam2ImageModel

    with HFCheckpoint(path, allow_pickle=allow_pickle) as ckpt:
        hf_config = ckpt.config()
        config = from_hf(hf_config)
        wanted = {e.hf for e in key_map(config)}
        extra = sorted(n for n in ckpt.names if n not in wanted)
        if extra and hf_config.get("model_type") != "sam2_video":
            raise CheckpointError(f"{str(path)!r} holds {len(extra)} tensor(s) a `sam2` image model does not "
                                  f"have, e.g. {extra[:3]}")
        state = {n: ckpt.get(n) for n in ckpt.names if n in wanted}
    model = build_from_hf_state(lambda: Sam2ImageModel(config, dtype=dtype, precision=precision,
                                                       rngs=nnx.Rngs(0)), config, state)
    return config, model
