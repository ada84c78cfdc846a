"""Training metrics sinks: a tqdm progress bar (or plain lines), `metrics.jsonl`, TensorBoard, loss-curve PNG.

Only process 0 writes. Each logged step is one JSON line in {out_dir}/metrics.jsonl with
step, loss, lr/<group>, grad_norm, tokens (real input tokens), loss_tokens, tokens_per_s, step_time_s,
flops (model FLOPs of the step), mfu (null when the device peak is unknown) and data_hash (a fingerprint of the
step's batches, so two runs can be compared batch for batch); with the Grain pipeline also data/examples,
data/skipped and data/skipped/<reason> (cumulative counts, shown as `skipped N` on the console; TensorBoard
tags `data/...`, the others `train/<key>`).
The console shows the loss with 6 significant digits (`format_loss`), the precision resume tests compare.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def format_loss(x: float) -> str:
    return f"{x:.6g}"


class MetricsLogger:
    def __init__(self, out_dir: str | Path, *, total_steps: int, start_step: int, progress: bool,
                 tensorboard: bool, enabled: bool = True):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.bar = None
        self.tb = None
        self.history: list[dict] = []
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.out_dir / "metrics.jsonl", "a")
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                            file=sys.stderr)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.history.append(record)
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()  # a killed run keeps every logged step
        step = record["step"]
        if self.tb is not None:
            for key, value in record.items():
                if key not in ("step", "data_hash") and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key if key.startswith("data/") else f"train/{key}", value, step)
        mfu = record.get("mfu")
        text = (f"step {step} loss {format_loss(record['loss'])} grad_norm {record['grad_norm']:.3g} "
                f"lr {record.get('lr', 0):.3g} tok/s {record['tokens_per_s']:.4g}"
                + (f" mfu {100 * mfu:.2f}%" if mfu is not None else "")
                + (f" skipped {record['data/skipped']}" if "data/skipped" in record else ""))
        if self.bar is not None:
            self.bar.set_postfix_str(text.split(" ", 2)[2], refresh=False)
            self.bar.write(text)
        else:
            print(text, flush=True)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.jsonl.close()


def read_metrics(out_dir: str | Path) -> list[dict]:
    """Every record of {out_dir}/metrics.jsonl; a resumed run's re-logged steps replace the earlier ones."""
    path = Path(out_dir) / "metrics.jsonl"
    by_step = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                by_step[record["step"]] = record
    return [by_step[k] for k in sorted(by_step)]


def plot_loss_curve(records: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Loss (and lr on a twin axis) vs step -> PNG. None when there is nothing to plot."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, [r["loss"] for r in records], color="tab:blue", lw=1.5, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    if any("lr" in r for r in records):
        ax2 = ax.twinx()
        ax2.plot(steps, [r.get("lr", float("nan")) for r in records], color="tab:orange", lw=1, alpha=0.7)
        ax2.set_ylabel("lr", color="tab:orange")
    ax.set_title(title or "training loss")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
