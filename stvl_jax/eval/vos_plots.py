"""Plots of `stvl eval vos` (matplotlib, Agg backend): J / F / J&F per case, and the per-frame J curve."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BARS = (("J_mean", "J"), ("F_mean", "F"), ("JF", "J&F"))


def plot_jf_per_case(summary: dict, path: str, title: str = "J / F / J&F per case") -> str:
    """Grouped bars: overall then each case of `vos_metrics.aggregate`'s summary, labelled with object counts."""
    groups = [("overall", summary["overall"])] + sorted(summary["per_case"].items())
    x = np.arange(len(groups))
    width = 0.8 / len(BARS)
    fig, ax = plt.subplots(figsize=(1.4 * len(groups) + 2.5, 3.6))
    for i, (key, label) in enumerate(BARS):
        vals = [g[key] for _, g in groups]
        bars = ax.bar(x + (i - (len(BARS) - 1) / 2) * width, vals, width, label=label, color=plt.cm.tab10(i))
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, [f"{name}\n(n={g['count']})" for name, g in groups], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=len(BARS), loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_frame(summary: dict, path: str, title: str = "per-frame J and F (mean over objects)") -> str:
    """Mean J and F at each clip frame index (NaN where no object is scored on that frame)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for i, (key, label) in enumerate((("J_per_frame", "J"), ("F_per_frame", "F"))):
        vals = np.asarray(summary[key], dtype=np.float64)
        ax.plot(np.arange(len(vals)), vals, marker="o", markersize=3, label=label, color=plt.cm.tab10(i))
    ax.set_xlabel("frame of the clip")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
