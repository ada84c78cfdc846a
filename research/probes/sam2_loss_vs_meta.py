"""stvl_jax.train.sam2_loss against Meta's own `training/loss_fns.py` (MultiStepMultiMasksAndIous) on random
inputs: multimask and single-mask outputs, present and absent objects, several steps, both IoU options.

    python -m research.probes.sam2_loss_vs_meta --sam2-git /work/.mirror/facebookresearch+sam2/repo

Their module is read from the git directory (`git show HEAD:training/loss_fns.py`) and run with stand-ins for
its two trainer imports (CORE_LOSS_KEY, the single-process distributed helpers); nothing of it is vendored.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types

import numpy as np


def load_meta_loss(git_dir: str):
    src = subprocess.run(["git", f"--git-dir={git_dir}", "show", "HEAD:training/loss_fns.py"], check=True,
                         capture_output=True, text=True).stdout
    trainer = types.ModuleType("training.trainer")
    trainer.CORE_LOSS_KEY = "core_loss"
    dist = types.ModuleType("training.utils.distributed")
    dist.get_world_size = lambda: 1
    dist.is_dist_avail_and_initialized = lambda: False
    for name, mod in {"training": types.ModuleType("training"), "training.trainer": trainer,
                      "training.utils": types.ModuleType("training.utils"), "training.utils.distributed": dist}.items():
        sys.modules[name] = mod
    mod = types.ModuleType("meta_loss_fns")
    exec(compile(src, "loss_fns.py", "exec"), mod.__dict__)
    return mod


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sam2-git", required=True)
    p.add_argument("--cases", type=int, default=200)
    args = p.parse_args()
    import jax.numpy as jnp
    import torch

    from stvl_jax.train.sam2_loss import Sam2LossConfig, sam2_losses

    meta = load_meta_loss(args.sam2_git)
    rng = np.random.default_rng(0)
    worst = 0.0
    for i in range(args.cases):
        s, n, m, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.choice([1, 3])), 8, 8
        all_iou, l1 = bool(rng.integers(2)), bool(rng.integers(2))
        logits = (rng.normal(size=(s, n, m, h, w)) * 3).astype(np.float32)
        ious = rng.random((s, n, m)).astype(np.float32)
        scores = rng.normal(size=(s, n, 1)).astype(np.float32)
        gt = (rng.random((n, h, w)) > 0.6).astype(np.float32)
        gt[rng.random(n) < 0.3] = 0  # some objects absent
        weights = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}
        ref_fn = meta.MultiStepMultiMasksAndIous(dict(weights), supervise_all_iou=all_iou, iou_use_l1_loss=l1,
                                                 pred_obj_scores=True, focal_gamma_obj_score=0.0,
                                                 focal_alpha_obj_score=-1)
        outs = {"multistep_pred_multimasks_high_res": [torch.from_numpy(logits[k]) for k in range(s)],
                "multistep_pred_ious": [torch.from_numpy(ious[k]) for k in range(s)],
                "multistep_object_score_logits": [torch.from_numpy(scores[k]) for k in range(s)]}
        ref = ref_fn([outs], torch.from_numpy(gt)[None])
        got = sam2_losses(jnp.asarray(logits), jnp.asarray(ious), jnp.asarray(scores), jnp.asarray(gt),
                          Sam2LossConfig(supervise_all_iou=all_iou, iou_use_l1_loss=l1))
        for k, rk in (("loss_mask", "loss_mask"), ("loss_dice", "loss_dice"), ("loss_iou", "loss_iou"),
                      ("loss_class", "loss_class"), ("loss", "core_loss")):
            r = float(ref[rk])
            worst = max(worst, abs(float(got[k]) - r) / max(abs(r), 1e-6))
    print(f"{args.cases} random cases: max relative difference {worst:.2e} (all four terms and the total)")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
