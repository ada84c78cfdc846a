"""Evaluation plots (matplotlib, Agg backend): state timelines and confusion matrices."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(report: dict, path: str, title: str) -> str:
    classes = report["classes"]
    conf = np.asarray(report["confusion"])
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    ax.imshow(conf, cmap="Blues")
    ax.set_xticks(range(len(classes) + 1), [*classes, "other"], rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for (i, j), v in np.ndenumerate(conf):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_state_timelines(streams: list[dict], classes, path: str, max_streams: int = 8) -> str:
    """One row pair per stream: ground-truth states (top) and predictions (bottom), one cell per second."""
    streams = streams[:max_streams]
    colors = {c: plt.cm.tab10(i) for i, c in enumerate(classes)}
    fig, ax = plt.subplots(figsize=(10, 0.7 * max(len(streams), 1) + 1))
    for k, s in enumerate(streams):
        y = 2 * (len(streams) - 1 - k)
        for row, states in ((y + 1, s["gold"]), (y, s["pred"])):
            for t, st in enumerate(states):
                ax.barh(row, 1, left=t, color=colors.get(st, "lightgray"), edgecolor="white", height=0.8)
    ax.set_yticks([2 * (len(streams) - 1 - k) + d for k in range(len(streams)) for d in (1, 0)],
                  [f"{i}:{lab}" for i in range(len(streams)) for lab in ("gold", "pred")], fontsize=7)
    ax.set_xlabel("second")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=len(colors),
              fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
