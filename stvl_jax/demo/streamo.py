"""Demo stages: Streamo SFT of the tiny Qwen2.5-VL on the synthetic set (simulated 8-device mesh, Orbax
checkpoints), then the streaming evaluation on held-out videos against the majority baseline."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from data_pipelines.formats.streamo import convert_record

# One line instead of Streamo's paragraph: on two CPU cores every token of every sample costs training time.
DEMO_SYSTEM_PROMPT = "Answer each second with </Silence>, </Standby> or </Response>."
TRAIN_CONFIG = "streamo_tiny"  # the packaged configs/train/streamo_tiny.yaml (stvl_jax.packaged)


def write_streams(data_dir: str, out_dir: str, splits=("train", "val", "test")) -> dict[str, str]:
    """Raw Streamo QA of the synthetic set -> per-second stream records (to-stream rules), absolute paths, in
    `out_dir/stream_{split}.jsonl` (the layout `stvl eval streamo --data` reads: pass out_dir's parent)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for split in splits:
        raw_path = os.path.join(data_dir, "streamo", f"raw_{split}.json")
        with open(raw_path) as f:
            records = json.load(f)
        root = os.path.dirname(os.path.abspath(raw_path))  # the index lives elsewhere: absolute media paths
        paths[split] = os.path.join(out_dir, f"stream_{split}.jsonl")
        with open(paths[split], "w") as f:
            for rec in records:
                stream = convert_record(rec, video_root=root, system_prompt=DEMO_SYSTEM_PROMPT)
                stream["videos"] = [os.path.normpath(os.path.join(root, stream["videos"][0]))]
                f.write(json.dumps(stream) + "\n")
    return paths


def train_streamo(workdir: str, streams: dict[str, str], tokenizer: str, *, steps: int | None,
                  extra: Sequence[str] = (), log=print):
    """`stvl train configs/train/streamo_tiny.yaml` with the demo's paths (and `extra` overrides); returns
    (trainer, summary)."""
    from stvl_jax.train.config import load_train_config
    from stvl_jax.train.trainer import Trainer

    overrides = [f"out_dir={os.path.join(workdir, 'train')}", f"data.pipeline.index={streams['train']}",
                 f"data.pipeline.tokenizer={tokenizer}", "checkpoint.resume=auto"]
    if steps is not None:
        overrides.append(f"steps={steps}")
    cfg = load_train_config(TRAIN_CONFIG, [*overrides, *extra])
    log(f"  training {cfg.model.config} for {cfg.steps} steps on mesh {cfg.mesh.shape()} "
        f"(batch {cfg.data.batch_size}, lr {cfg.optim.lr}, loss {cfg.loss.kind}) -> {cfg.out_dir}")
    trainer = Trainer(cfg)
    summary = trainer.run()
    return trainer, summary


def final_checkpoint(summary: dict) -> str:
    """The checkpoint the training run ended with (what `stvl eval streamo --ckpt` reads)."""
    return os.path.join(summary["checkpoint_dir"], str(summary["step"]))


def _stream_eval(model, tokenizer_dir: str, streams_path: str, limit: int | None, zero_pixels: bool):
    from transformers import AutoTokenizer

    from stvl_jax.eval.streamo_eval import evaluate_streamo

    with open(streams_path) as f:
        records = [json.loads(line) for line in f if line.strip()][:limit]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    # the checkpoint's preprocessing and `stvl eval streamo`'s defaults: the CLI reproduces these numbers
    return records, evaluate_streamo(model, tok, model.preprocessing, records, os.path.dirname(streams_path),
                                     zero_pixels=zero_pixels)


def evaluate(model, tokenizer_dir: str, streams_path: str, out_dir: str, *, limit: int | None = None, log=print):
    from stvl_jax.eval.plots import plot_confusion, plot_state_timelines
    from stvl_jax.eval.streamo_eval import format_per_task

    records, result = _stream_eval(model, tokenizer_dir, streams_path, limit, zero_pixels=False)
    m = result["metrics"]
    os.makedirs(out_dir, exist_ok=True)
    plot_confusion(m, os.path.join(out_dir, "streamo_confusion.png"), "Streamo states (held-out)")
    plot_state_timelines(result["streams"], m["classes"], os.path.join(out_dir, "streamo_timelines.png"))
    with open(os.path.join(out_dir, "streamo_metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    per = "  ".join(f"{c} F1 {v['f1']:.3f}" for c, v in m["per_class"].items())
    log(f"  held-out: {m['n']} seconds in {len(records)} streams; {per}")
    log(f"  state macro-F1 {m['macro_f1']:.3f}  vs majority baseline ({m['baseline']['prediction']} every "
        f"second) {m['baseline']['macro_f1']:.3f}; accuracy {m['accuracy']:.3f} vs {m['baseline']['accuracy']:.3f}")
    log(f"  macro-F1 per task: {format_per_task(m)}")
    rt = m["response_timing"]
    log(f"  responses: {rt['responded']}/{rt['streams_with_response']} streams answered, "
        f"{100 * rt['within_1s']:.0f}% within 1 s of the ground truth; "
        f"median {m['median_turn_latency_ms']:.0f} ms/turn")
    return result


def pixel_control(model, tokenizer_dir: str, streams_path: str, out_dir: str, result: dict, *,
                  limit: int | None = None, log=print) -> dict:
    """`evaluate` again with every frame black: what the score owes to the video rather than to the question
    and the protocol's timing. Returns its metrics and in how many streams the outputs did not change."""
    records, control = _stream_eval(model, tokenizer_dir, streams_path, limit, zero_pixels=True)
    with open(os.path.join(out_dir, "streamo_metrics_zero_pixels.json"), "w") as f:
        json.dump(control, f, indent=1)
    m = control["metrics"]
    same = sum(a["outputs"] == b["outputs"] for a, b in zip(result["streams"], control["streams"]))
    log(f"  control, every pixel zeroed: state macro-F1 {m['macro_f1']:.3f}; outputs unchanged in {same} of "
        f"{len(records)} streams" + (" (the score comes from the question and the protocol's timing, not the "
                                     "video)" if same == len(records) else ""))
    return {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "unchanged_streams": same,
            "streams": len(records)}
