"""QVHighlights timestamp Yes/No evaluation (Strefer's task): batched greedy generation over (video, "At t
seconds, is it true that <query>? Answer Yes or No.") prompts on the model's mesh; accuracy overall and per
answer, against the always-Yes baseline (the set is balanced, so 0.5).

A sample is {"id", "video", "question", "answer": "Yes" | "No"} (`stvl data qvh-yesno`); one that lacks a field
or whose video cannot be decoded (the training pipeline's frame sampling: `eval.prompts.video_prompt`) is
skipped and counted, and the rest are batched in order."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tqdm import tqdm

from data_pipelines.formats.qvhighlights import normalize_yesno, validate_yesno_sample, yesno_accuracy
from stvl_jax.errors import InputError
from stvl_jax.eval.prompts import collate_prompts, video_prompt
from stvl_jax.eval.skips import SkipReport


def evaluate_qvh_yesno(model, tokenizer, vision, samples: list[dict], media_root: str, *, batch_size: int = 8,
                       fps: float | None = None, max_frames: int = 16, max_new_tokens: int = 3,
                       progress: bool = True, sources: Sequence[str] | None = None,
                       skips: SkipReport | None = None) -> dict:
    """Generate an answer for every sample; a bad sample (`validate_yesno_sample`, an undecodable video) is counted
    in `skips` (named by `sources[i]`, else its position) and listed under "skipped"; `skips=None` raises."""
    from stvl_jax.models.qwen_vl.generate import generate

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    mesh = getattr(model, "mesh", None)
    data_size = 1 if mesh is None else mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
    report = SkipReport() if skips is None else skips
    scored, outputs, chunk, rows = [], {}, [], []

    def flush():
        # pad the last batch with repeats so every batch has the compiled shape and divides the mesh
        padded = rows + [rows[-1]] * ((-len(rows)) % max(batch_size, data_size))
        ids = generate(model, collate_prompts(tokenizer, vision, padded), max_new_tokens=max_new_tokens,
                       eos_token_id=eos, pad_token_id=eos)
        for s, row in zip(chunk, ids[: len(chunk)]):
            outputs[s["id"]] = tokenizer.decode([t for t in row if t != eos], skip_special_tokens=True)
        scored.extend(chunk)
        chunk.clear()
        rows.clear()

    for i, s in enumerate(tqdm(samples, desc="qvh yes/no", unit="question", disable=not progress)):
        source = sources[i] if sources is not None else f"sample {i}"
        try:
            validate_yesno_sample(s, source, with_media=True)
            path = s["video"] if os.path.isabs(s["video"]) else os.path.join(media_root, s["video"])
            rows.append(video_prompt(tokenizer, vision, path, s["question"], fps=fps, max_frames=max_frames))
        except InputError as e:
            if skips is None:
                raise
            report.add_error(source, e)
            continue
        chunk.append(s)
        if len(rows) == batch_size:
            flush()
    if rows:
        flush()
    metrics = yesno_accuracy(scored, outputs)
    metrics["unparseable"] = sum(normalize_yesno(t) is None for t in outputs.values())
    metrics["baseline_always_yes"] = yesno_accuracy(scored, {s["id"]: "Yes" for s in scored})["accuracy"]
    return {"metrics": metrics, "outputs": outputs, "skipped": report.as_dict()}
