"""One training step of a ~50M Qwen3-VL on this machine: our jitted JAX step vs the same step in PyTorch
(transformers model, loss.backward, clip_grad_norm_, torch.optim.AdamW), same weights, same batch.

Both sides: full fine-tuning (every parameter trains), fp32, AdamW (lr 1e-5, betas 0.9/0.999, eps 1e-8, weight
decay 0.01 — on every tensor in torch, on kernels/embeddings in ours, HF Trainer's rule; the cost is the same),
global-norm clipping at 1.0, next-token CE on the text tokens. The steps are timed interleaved
(JAX, torch, JAX, ...) and the script prints medians, tokens/s, MFU and the ratio torch/JAX (>1 = JAX
faster). MFU uses the model FLOPs of `stvl_jax.train.flops` (vision tower + mergers + LLM, x3 for training)
over a peak measured here: the fp32 2048^3 numpy matmul rate (the fastest of numpy/torch/jax on this CPU; no
datasheet peak applies), timed in the same interleaved rotation as the steps so that both see the same load.
The first-step loss of both sides is printed as a consistency check.

    stvl bench train_step [--reps 5] [--frames 16] [--size 224] [--freeze-vision]

On a GPU (bf16, a Qwen3-VL-2B-shaped step, MFU against the datasheet peak) use the trainer itself:
    stvl train qwen3vl_2b_mfu     (see docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LR, WD, CLIP = 1e-5, 0.01, 1.0


def sgemm(n: int = 2048):
    """A numpy fp32 n^3 matmul (the fastest of numpy/torch/jax here) -> (fn, FLOPs)."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    return (lambda: a @ a), 2.0 * n**3


def text_labels(batch, hf_config):
    """labels = input_ids on text tokens, -100 on vision placeholders/markers (HF shifts them itself)."""
    import numpy as np

    ids = batch["input_ids"]
    vision = np.isin(ids, [hf_config.video_token_id, hf_config.image_token_id, hf_config.vision_start_token_id,
                           hf_config.vision_end_token_id])
    return np.where(vision, -100, ids).astype(np.int64)


ALL_GROUPS = ("vision", "merger", "llm", "embed")  # full fine-tuning on both sides
NO_VISION = ("merger", "llm", "embed")  # --freeze-vision: Streamo's recipe (ViT frozen, merger trains)


def torch_side(tm, batch, labels, freeze_vision: bool):
    """The PyTorch step: forward with labels, backward, clip, AdamW, zero_grad. Returns step() -> loss."""
    import torch

    if freeze_vision:  # the ViT without its mergers (HF: model.visual.{patch_embed,pos_embed,blocks})
        for name, p in tm.named_parameters():
            if ".visual." in f".{name}" and "merger" not in name:
                p.requires_grad_(False)
    trainable = [p for p in tm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WD)
    tb = {k: torch.from_numpy(v) for k, v in batch.items()}
    tlabels = torch.from_numpy(labels)

    def step():
        out = tm(**tb, labels=tlabels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    return step


def jax_side(tm, batch, labels, groups, scan_layers: bool):
    """The trainer's jitted step on one device, initialised with the torch model's weights; `scan_layers` as
    the trainer's `model.scan_layers` (False: the layer loop unrolled, as eager PyTorch runs it).
    Returns (step() -> loss, model config, HostBatch)."""
    import jax
    import numpy as np

    from converters.qwen_vl_config import from_hf_dict
    from converters.qwen_vl_convert import params_from_hf
    from stvl_jax.sharding import make_mesh
    from stvl_jax.train.batches import place_host_batch, prepare_host_batch
    from stvl_jax.train.config import LossConfig, OptimConfig
    from stvl_jax.train.losses import get_loss
    from stvl_jax.train.optim import make_optimizer
    from stvl_jax.train.state import ModelSpec, abstract_train_state, init_train_state, train_state_shardings
    from stvl_jax.train.step import make_step_fns

    config = from_hf_dict(tm.config.to_dict())
    spec = ModelSpec.create(config, trainable_groups=groups, scan_layers=scan_layers)
    optim = OptimConfig(lr=LR, schedule="constant", weight_decay=WD, max_grad_norm=CLIP)
    tx = make_optimizer(optim, spec.split(spec.abstract)[0], total_steps=10**6, warmup_steps=0)
    mesh = make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
    weights = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    flat = params_from_hf(config, weights.keys(), weights.__getitem__)
    placement = spec.param_shardings(mesh)
    state = init_train_state(spec, tx, mesh, seed=0,
                             params={k: jax.device_put(flat[k], placement[k]) for k in spec.abstract})
    lcfg = LossConfig()
    fns = make_step_fns(spec, tx, get_loss(lcfg), lcfg, train_state_shardings(abstract_train_state(spec, tx),
                                                                            spec, mesh))
    host = prepare_host_batch(config, {**batch, "labels": labels.astype(np.int32)}, mesh)
    inputs, targets = place_host_batch(host, mesh)
    holder = {"state": state}

    def step():
        with jax.set_mesh(mesh):
            holder["state"], metrics = fns.train_step(holder["state"], inputs, targets)
        return float(metrics["loss"])

    return step, config, host


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--freeze-vision", action="store_true", help="freeze the ViT (not the mergers) on both sides")
    args = p.parse_args(argv)

    import torch

    from benchmarks.common import interleaved, machine, median, torch_qwen3_vl_50m
    from forward_vs_torch import make_batch
    from stvl_jax.train.flops import KernelSizes, forward_flops, train_multipliers, train_step_flops

    hf_config, tm = torch_qwen3_vl_50m(seed=0)
    tm.train()
    n_params = sum(p.numel() for p in tm.parameters())
    batch = make_batch(hf_config, args.frames, args.size)
    labels = text_labels(batch, hf_config)
    groups = NO_VISION if args.freeze_vision else ALL_GROUPS
    # both JAX variants copy the weights before torch trains them
    jax_step, config, host = jax_side(tm, batch, labels, groups, scan_layers=False)
    scan_step = jax_side(tm, batch, labels, groups, scan_layers=True)[0]
    torch_step = torch_side(tm, batch, labels, args.freeze_vision)

    first = {"jax": jax_step(), "jax_scan": scan_step(), "torch": torch_step()}  # also the compile / warm-up step
    matmul, matmul_flops = sgemm()
    load_before = os.getloadavg()
    # the matmul runs in the same rotation, so the MFU denominator sees the same machine load as the steps
    times = interleaved({"jax": jax_step, "jax_scan": scan_step, "torch": torch_step, "sgemm": matmul},
                        reps=args.reps, warmup=0)
    load_after = os.getloadavg()
    peak = matmul_flops / median(times["sgemm"])

    fwd = forward_flops(config, KernelSizes.from_config(config), host.row_lengths, host.grids)
    flops = train_step_flops(fwd, train_multipliers(groups))
    tokens = float(host.row_lengths.sum())
    tt = median(times["torch"])
    print(f"machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} (1 min)")
    trains = "ViT frozen" if args.freeze_vision else "all trainable"
    print(f"model: Qwen3-VL {n_params / 1e6:.1f}M params, {trains}, fp32, AdamW + clip {CLIP}; batch: 1 x "
          f"{batch['input_ids'].shape[1]} tokens, {args.frames}-frame video at {args.size}px "
          f"({batch['pixel_values_videos'].shape[0]} patches); {args.reps} interleaved reps")
    print(f"model FLOPs per step: {flops / 1e9:.1f} GFLOP (vision {fwd['vision'] / 1e9:.1f}, merger "
          f"{fwd['merger'] / 1e9:.2f}, llm {fwd['llm'] / 1e9:.1f}, head {fwd['head'] / 1e9:.2f} GFLOP forward; "
          f"x1-x3 for training)")
    print(f"peak = median fp32 2048^3 numpy matmul rate in the same rotation: {peak / 1e9:.0f} GFLOP/s")
    print(f"first-step loss: jax {first['jax']:.6f}  jax_scan {first['jax_scan']:.6f}  torch {first['torch']:.6f}"
          f"  |diff| {abs(first['jax'] - first['torch']):.2e}")
    print("jax = the trainer's step with model.scan_layers=false (layers unrolled); jax_scan = the default scan")
    print(f"{'':9}{'median s':>10}{'min s':>10}{'tokens/s':>11}{'MFU':>8}")
    for name in ("jax", "jax_scan", "torch"):
        t = median(times[name])
        print(f"{name:9}{t:10.3f}{min(times[name]):10.3f}{tokens / t:11.1f}{100 * flops / t / peak:7.1f}%")
    for name in ("jax", "jax_scan"):
        tj = median(times[name])
        print(f"ratio torch/{name}: median step time {tt / tj:.2f}x, min step time "
              f"{min(times['torch']) / min(times[name]):.2f}x (the min is the better estimate on a shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
