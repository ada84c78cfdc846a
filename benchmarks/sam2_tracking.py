"""SAM2 video tracking, JAX vs transformers eager, same weights and inputs: frames/s of propagation.

One video of `--frames` random frames; `--objects` objects boxed on frame 0; then forward propagation, every
later frame being one tracking step (image encoder + memory attention + mask decoder + memory encoder). Timed
per frame over whole-video runs that alternate between the two sides (`--reps`), medians reported:

  encoder  one frame's image features (Hiera + FPN + the decoder's high-res projections), timed alone
  frame    a propagated frame, end to end (what frames/s counts)
  step     frame - encoder: the tracking step proper (memory attention + decoder + memory encoder)

plus the largest |d low-res mask logit| between the two sides over the propagated frames (both keep the memory
bank in bf16, as shipped). CPU numbers are only meaningful as a ratio. `--no-torch` times the JAX side alone
(the GPU command: transformers' CPU build cannot run there):

    stvl bench sam2_tracking [--hiera tiny] [--size 512] [--frames 8] [--objects 1] [--reps 3] [--compact-memory]
    stvl bench sam2_tracking --hiera large --size 1024 --dtype bfloat16 --frames 64 --no-torch   # on a GPU

The SAM 2 paper reports 30.2 frames/s for SAM 2 Hiera-L on one A100 (real-time tracking, its speed table); the
facebookresearch/sam2 README gives it as the speed with the image encoder compiled (24.2 eager), and 39.7 with
the whole model compiled since its 2024-12 release. The GPU run above is the figure to set beside them.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks.sam2_vs_torch import HIERA


def hf_video_config(hiera: str, size: int):
    from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VisionConfig

    h = dict(HIERA[hiera])
    c0 = h["hidden_size"]
    dims = [c0, 2 * c0, 4 * c0, 8 * c0]
    side = size // 4
    backbone = Sam2HieraDetConfig(image_size=[size, size], embed_dim_per_stage=dims, **h)
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1],
                              backbone_feature_sizes=[[side, side], [side // 2, side // 2], [side // 4, side // 4]])
    cfg = Sam2VideoConfig(vision_config=vision, image_size=size, prompt_encoder_config=dict(image_size=size),
                          memory_attention_rope_feat_sizes=[size // 16, size // 16])
    cfg._attn_implementation = "eager"
    return cfg


def jax_tracking_run(model, pixels, boxes, compact_memory: bool = False):
    """(per-frame seconds of frames 1.., low-res logits (T, O, h, w)) of one tracking session."""
    import jax

    from stvl_jax.models.sam2.tracker import Prompt, Tracker

    tracker = Tracker(model, pixels, list(range(1, len(boxes) + 1)), compact_memory=compact_memory)
    tracker.add_prompts(0, {i + 1: Prompt(box=b) for i, b in enumerate(boxes)})
    times, t0 = [], time.perf_counter()
    for _ in tracker.propagate():
        jax.block_until_ready(tracker.banks)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    return times[1:], tracker.result().low_res_logits  # frame 0 is the prompted one


def _torch_run(model, pixels, boxes):
    import numpy as np
    import torch
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    size = pixels.shape[-1]
    session = Sam2VideoInferenceSession(video=torch.from_numpy(pixels), video_height=size, video_width=size,
                                        dtype=torch.float32)
    low = np.zeros((pixels.shape[0], len(boxes), size // 4, size // 4), np.float32)
    times = []
    with torch.no_grad():
        for i, b in enumerate(boxes):
            session.add_point_inputs(session.obj_id_to_idx(i + 1), 0, {
                "point_coords": torch.tensor(np.reshape(b, (2, 2)), dtype=torch.float32)[None, None],
                "point_labels": torch.tensor([2, 3], dtype=torch.int32)[None, None]})
        session.obj_with_new_inputs = list(range(1, len(boxes) + 1))
        model(inference_session=session, frame_idx=0)
        t0 = time.perf_counter()
        for o in model.propagate_in_video_iterator(session, start_frame_idx=0):
            times.append(time.perf_counter() - t0)
            low[o.frame_idx] = o.pred_masks.float().numpy().reshape(len(boxes), size // 4, size // 4)
            t0 = time.perf_counter()
    return times[1:], low


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hiera", default="tiny", choices=sorted(HIERA))
    p.add_argument("--size", type=int, default=512, help="input size (multiples of 256 keep every window tiling)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--no-torch", action="store_true", help="time the JAX side only (GPU)")
    p.add_argument("--compact-memory", action="store_true",
                   help="Tracker(compact_memory=True): attend only to the memory slots that can be filled")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx
    from transformers import Sam2VideoModel

    from benchmarks.common import interleaved, machine, median
    from converters.sam2_video_keys import load_hf_video_state
    from stvl_jax.models.sam2.tracker import jitted_tracking
    from stvl_jax.models.sam2.video_config import from_hf
    from stvl_jax.models.sam2.video_model import abstract_video_model

    hc = hf_video_config(args.hiera, args.size)
    torch.manual_seed(0)
    tm = Sam2VideoModel(hc).eval()
    with torch.no_grad():  # the reference zero-initialises several tables: give them values
        for name, t in tm.state_dict().items():
            if t.is_floating_point() and not t.any():
                t.normal_(0, 0.02)
    n_params = sum(t.numel() for t in tm.parameters())
    config = from_hf(hc.to_dict())
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    ours = load_hf_video_state(abstract_video_model(config, dtype=dtype), config,
                               {k: v.detach().numpy() for k, v in tm.state_dict().items()})
    if args.no_torch:
        del tm

    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((args.frames, 3, args.size, args.size)).astype(np.float32)
    boxes = [np.asarray([0.1 + 0.15 * k, 0.2, 0.5 + 0.1 * k, 0.7], np.float32) * args.size
             for k in range(args.objects)]
    graphdef, state = nnx.split(ours)
    frame0 = jnp.asarray(pixels[:1])
    t_frame0 = torch.from_numpy(pixels[:1])
    runs: dict[str, list[float]] = {"jax": []}
    features = jitted_tracking(graphdef)[0]  # the tracker's own jitted feature pass
    enc_fns = {"jax": lambda: jax.block_until_ready(features(state, frame0))}
    if not args.no_torch:
        runs["torch"] = []

        def t_encode():
            with torch.no_grad():
                return tm.get_image_features(t_frame0)

        enc_fns["torch"] = t_encode
    jax_tracking_run(ours, pixels, boxes, args.compact_memory)  # compile
    lows = {}
    for _ in range(args.reps):
        runs["jax"] += (r := jax_tracking_run(ours, pixels, boxes, args.compact_memory))[0]
        lows["jax"] = np.asarray(r[1], np.float32)
        if not args.no_torch:
            runs["torch"] += (r := _torch_run(tm, pixels, boxes))[0]
            lows["torch"] = r[1]
    enc = interleaved(enc_fns, reps=max(args.reps, 3))

    dev = jax.devices()[0]
    print(f"machine: {machine()}" + ("" if args.no_torch else f"; torch {torch.__version__} "
                                     f"({torch.get_num_threads()} threads)"))
    print(f"model: SAM2 video Hiera-{args.hiera} {n_params / 1e6:.1f}M params at {args.size}px, dtype {args.dtype}; "
          f"{args.objects} object(s) boxed on frame 0, {args.frames - 1} propagated frames x {args.reps} runs on "
          f"{dev.device_kind}")
    sides = list(runs)
    print(f"{'':10}" + "".join(f"{s + ' ms':>12}" for s in sides) + ("" if args.no_torch else f"{'torch/jax':>11}"))
    rows = {"encoder": {s: median(enc[s]) for s in sides}, "frame": {s: median(runs[s]) for s in sides}}
    rows["step"] = {s: rows["frame"][s] - rows["encoder"][s] for s in sides}
    for name, r in rows.items():
        ratio = "" if args.no_torch else f"{r['torch'] / r['jax']:10.2f}x"
        print(f"{name:10}" + "".join(f"{1e3 * r[s]:12.2f}" for s in sides) + ratio)
    print("frames/s  " + "".join(f"{1 / rows['frame'][s]:12.2f}" for s in sides))
    if not args.no_torch:
        d = np.abs(lows["jax"][1:] - lows["torch"][1:])
        print(f"max |d low-res mask logit| over the propagated frames: {float(d.max()):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
