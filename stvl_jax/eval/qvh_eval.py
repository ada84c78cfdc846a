"""QVHighlights timestamp Yes/No evaluation (Strefer's task): batched greedy generation over (video, "At t
seconds, is it true that <query>? Answer Yes or No.") prompts on the model's mesh; accuracy overall and per
answer, against the always-Yes baseline (the set is balanced, so 0.5)."""

from __future__ import annotations

import os

from tqdm import tqdm

from data_pipelines.formats.qvhighlights import normalize_yesno, yesno_accuracy
from stvl_jax.eval.prompts import video_prompt_batch


def evaluate_qvh_yesno(model, tokenizer, vision, samples: list[dict], media_root: str, *, batch_size: int = 8,
                       fps: float | None = None, max_frames: int = 16, max_new_tokens: int = 3,
                       progress: bool = True) -> dict:
    from stvl_jax.models.qwen_vl.generate import generate

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    mesh = getattr(model, "mesh", None)
    data_size = 1 if mesh is None else mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
    predictions, outputs = {}, {}
    for start in tqdm(range(0, len(samples), batch_size), desc="qvh yes/no", disable=not progress):
        chunk = samples[start : start + batch_size]
        items = [(s["video"] if os.path.isabs(s["video"]) else os.path.join(media_root, s["video"]), s["question"])
                 for s in chunk]
        # pad the last batch with repeats so every batch has the compiled shape and divides the mesh
        n_real = len(items)
        items += [items[-1]] * ((-len(items)) % max(batch_size, data_size))
        batch = video_prompt_batch(tokenizer, vision, items, fps=fps, max_frames=max_frames)
        ids = generate(model, batch, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=eos)
        for s, row in zip(chunk, ids[:n_real]):
            text = tokenizer.decode([t for t in row if t != eos], skip_special_tokens=True)
            outputs[s["id"]] = text
            predictions[s["id"]] = text
    metrics = yesno_accuracy(samples, predictions)
    metrics["unparseable"] = sum(normalize_yesno(t) is None for t in outputs.values())
    metrics["baseline_always_yes"] = yesno_accuracy(samples, {s["id"]: "Yes" for s in samples})["accuracy"]
    return {"metrics": metrics, "outputs": outputs}
