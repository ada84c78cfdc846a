"""Demo stage: a tiny randomly initialised HF Qwen3-VL -> `stvl convert import` -> `load_model` on the
simulated 8-device mesh -> logits and greedy tokens on a synthetic video, side by side with PyTorch."""

from __future__ import annotations

import os

import numpy as np

from stvl_jax.eval.prompts import video_prompt_batch


def run_parity(workdir: str, video_path: str, tokenizer_dir: str, mesh, *, new_tokens: int = 8, log=print) -> dict:
    import torch
    from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    import stvl_jax
    from converters import import_hf, to_hf_dict
    from stvl_jax.models.qwen_vl.presets import load_model_config

    config = load_model_config("qwen3vl_tiny")
    hf = to_hf_dict(config)
    for sub in ("text_config", "vision_config"):
        hf[sub]["initializer_range"] = 0.2  # a sharper random model: its greedy tokens are not all the same
    torch.manual_seed(0)
    tm = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**hf)).eval()
    hf_dir, ckpt = os.path.join(workdir, "hf_qwen3vl_tiny"), os.path.join(workdir, "ckpt_qwen3vl_tiny")
    tm.save_pretrained(hf_dir)
    import_hf(hf_dir, ckpt, overwrite=True, progress=False)
    model = stvl_jax.load_model(ckpt, mesh=mesh)
    log(f"  converted {sum(p.numel() for p in tm.parameters()) / 1e6:.2f}M-param HF Qwen3-VL -> {ckpt}; "
        f"loaded on mesh {dict(mesh.shape)}")

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # the checkpoint's preprocessing at a deliberately tiny resolution (CPU): <= 96 x 96 pixels per frame
    vision = model.preprocessing.updated({"video": {"budget": "frame", "max_pixels": 96 * 96}})
    batch = video_prompt_batch(tok, vision, [(video_path, "What happens?")], max_frames=8)
    ours = np.asarray(model(**batch).logits, np.float64)
    with torch.no_grad():
        ref_out = tm(**{k: torch.from_numpy(v) for k, v in batch.items()})
        ref = ref_out.logits.double().numpy()
        ref_ids = tm.generate(**{k: torch.from_numpy(v) for k, v in batch.items()}, max_new_tokens=new_tokens,
                              do_sample=False, eos_token_id=None, pad_token_id=0)[0, batch["input_ids"].shape[1]:]
    ids = stvl_jax.generate(model, batch, max_new_tokens=new_tokens, eos_token_id=())[0]

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    lp, lq = log_softmax(ref), log_softmax(ours)
    kl = float((np.exp(lp) * (lp - lq)).sum(-1).mean())
    result = dict(tokens=int(batch["input_ids"].shape[1]), video_grid=batch["video_grid_thw"][0].tolist(),
                  max_abs_logit_diff=float(np.abs(ours - ref).max()), kl=kl,
                  jax_tokens=ids.tolist(), torch_tokens=ref_ids.tolist(),
                  tokens_equal=bool(np.array_equal(ids, ref_ids.numpy())))
    log(f"  {result['tokens']} tokens ({batch['video_grid_thw'][0].tolist()} video grid): "
        f"max |Δlogit| {result['max_abs_logit_diff']:.2e}, KL(torch‖jax) {kl:.2e}")
    log(f"  greedy {new_tokens} tokens  jax  : {result['jax_tokens']}")
    log(f"                      torch: {result['torch_tokens']}  -> "
        f"{'identical' if result['tokens_equal'] else 'DIFFERENT'}")
    return result
