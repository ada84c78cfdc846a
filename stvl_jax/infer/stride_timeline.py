"""Human-readable output of a STRIDE stream: a text timeline and an activation-timeline PNG.

PNG (matplotlib, Agg): top panel, one row per chunk (y = the chunk's last frame time) with its window's slot
labels on the absolute time axis (active orange, inactive grey); bottom panel, the ground-truth span(s)
(green), the predicted segments (blue) and the trigger times (red ticks, with the answer text when there is
one) on the same axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stvl_jax.infer.stride_runtime import StreamResult  # noqa: E402

SLOT_GLYPHS = {0: ".", 1: "#"}


def latency_summary(result: StreamResult) -> dict:
    """Per-chunk wall time (ms): all chunks, and split by whether the chunk (re)built its prefix."""
    def stats(xs):
        xs = np.asarray(xs, np.float64) * 1000
        return {"n": int(len(xs)), "median_ms": float(np.median(xs)) if len(xs) else None,
                "max_ms": float(xs.max()) if len(xs) else None}

    lat = [c.latency_s for c in result.chunks]
    return {"all": stats(lat), "prefix_built": stats([c.latency_s for c in result.chunks if c.prefix_built]),
            "prefix_reused": stats([c.latency_s for c in result.chunks if not c.prefix_built]),
            "forwards_per_chunk": float(np.mean([c.forwards for c in result.chunks])) if result.chunks else 0.0}


def format_timeline(result: StreamResult, answers: Sequence | None = None,
                    gt: Sequence[Sequence[float]] | None = None) -> str:
    lines = []
    for c in result.chunks:
        slots = "".join(SLOT_GLYPHS[int(v)] for v in c.labels)
        span = "-" if c.span is None else f"{c.span[0]:.1f}-{c.span[1]:.1f}s"
        built = " prefix" if c.prefix_built else ""
        lines.append(f"t={c.t_last:6.1f}s  [{slots}]  span {span:<12} {c.forwards} fwd  "
                     f"{1000 * c.latency_s:7.1f} ms{built}")
        for g in c.triggers:
            lines.append(f"           TRIGGER {g.start:.1f}-{g.end:.1f}s ({g.kind})")
    lines.append("segments: " + (", ".join(f"{g.start:.1f}-{g.end:.1f}s ({g.kind})" for g in result.segments)
                                  or "none"))
    for a in answers or ():
        lines.append(f"answer at {a.time:.1f}s for {a.segment[0]:.1f}-{a.segment[1]:.1f}s: {a.text!r}")
    if gt:
        lines.append("ground truth: " + ", ".join(f"{s:.2f}-{e:.2f}s" for s, e in gt))
    lat = latency_summary(result)
    lines.append(f"latency per chunk: median {lat['all']['median_ms']:.1f} ms over {lat['all']['n']} chunks "
                 f"(prefix built: {lat['prefix_built']['n']}, median {lat['prefix_built']['median_ms'] or 0:.1f} ms;"
                 f" reused: {lat['prefix_reused']['n']}, median {lat['prefix_reused']['median_ms'] or 0:.1f} ms); "
                 f"{lat['forwards_per_chunk']:.1f} forwards per chunk")
    return "\n".join(lines)


def plot_timeline(result: StreamResult, path: str, *, resolution: float = 1.0,
                  gt: Sequence[Sequence[float]] | None = None, answers: Sequence | None = None,
                  title: str = "") -> str:
    chunks = result.chunks
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 2.2 + 0.28 * max(len(chunks), 1)), sharex=True,
                                      gridspec_kw={"height_ratios": [max(len(chunks), 1), 3]})
    for c in chunks:
        for s, v, unseen in zip(c.slot_starts, c.labels, c.unseen):
            if unseen:  # slots before the frames in view
                continue
            top.barh(c.t_last, resolution, left=s, height=0.8 * _row_gap(chunks),
                     color="tab:orange" if v else "0.85", edgecolor="white", linewidth=0.3)
    top.set_ylabel("chunk (last frame, s)")
    top.set_title(title or "STRIDE activation timeline")
    for seg in gt or ():
        bottom.barh(2, seg[1] - seg[0], left=seg[0], height=0.7, color="tab:green")
    for g in result.segments:
        bottom.barh(1, g.end - g.start, left=g.start, height=0.7, color="tab:blue")
        if g.trigger_time is not None:
            bottom.plot([g.trigger_time] * 2, [0.3, 2.5], color="tab:red", lw=1.5)
    for a in answers or ():
        bottom.annotate(a.text[:40], (a.time, 0.15), fontsize=7, color="tab:red")
    bottom.set_yticks([1, 2], ["predicted", "ground truth"])
    bottom.set_ylim(-0.2, 2.7)
    bottom.set_xlabel("stream time (s)")
    end = max([result.duration + resolution] + [s[1] for s in gt or ()])
    bottom.set_xlim(0, end)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _row_gap(chunks) -> float:
    if len(chunks) < 2:
        return 1.0
    return float(np.min(np.diff([c.t_last for c in chunks])))
