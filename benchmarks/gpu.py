"""Every GPU figure from one short run: `stvl bench gpu` (one H100 or H200, random weights, no downloads).

Prints one table with the device and each figure beside its anchor, and writes it as JSON (`--json`):

  train      Qwen3-VL-2B-shaped train step (the packaged `qwen3vl_2b_mfu` config: bf16 compute, fp32 master
             weights, AdamW, remat dots_no_batch), MFU with vision FLOPs counted (`stvl_jax.train.flops`) at two
             sequence lengths (8 x 2048 and 4 x 4096 tokens, a 16-frame 448 px video per row);
  stride     STRIDE-2B activation step: 8 unmasking steps (+ the retain step) on the cached mega-window prefix,
             32-frame chunks of 512 px frames, 256-slot window (`benchmarks.stride_latency`, `cache="mega"`);
  decode     Qwen3-VL-2B greedy decode (`stvl_jax.generate`), tokens/s at batch 1 and 32, and the fraction of the
             HBM roofline (bytes of the text weights + the KV cache read per step over the datasheet bandwidth);
  sam2       SAM2 Hiera-L video tracking frames/s at 1024 px, bf16 (`benchmarks.sam2_tracking`, JAX side only);
  virst      VIRST end-to-end frames/s: the predictor (`stvl_jax.infer.virst`, what `stvl segment --query` runs)
             on a 32-frame 480p clip and one expression, a Qwen3-VL-2B-shaped LLM + SAM2 Hiera-L at 1024 px, bf16;
  check      correctness on the device: fp32 logits on the device vs the CPU, bf16 vs fp32 logits on a short
             batch, and a sharded gradient step equal to a single-device one (needs >= 2 devices).

Each part runs in its own process under a deadline (its share of `--budget`, plus what earlier parts left
unused): a part that overruns is killed and its missing figures are reported "timed out"; the suite goes on.
Compiled programs are kept in a persistent cache (`--cache-dir`), so a second run within the same machine's
lease spends its time measuring. `--smoke` runs the same code on the CPU with tiny shapes (tiny presets, two
fake CPU devices so that the sharded check runs too); its time is CPU compilation, minutes on a busy 2-core
machine. `tests/benchmarks/test_gpu_suite.py` runs it (marked slow) and checks the runner in seconds.

    stvl bench gpu [--json gpu_bench.json] [--budget 570] [--parts train,stride,decode,sam2,virst,check]
    stvl bench gpu --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# seconds of the total budget per part (scaled to --budget); compile-heavy parts get more
WEIGHTS = {"train": 170, "stride": 100, "decode": 70, "sam2": 70, "virst": 100, "check": 60}
PARTS = tuple(WEIGHTS)
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stvl_jax" / "jax_cache"


def figure_names(part: str, smoke: bool) -> list[str]:
    """The figures a part reports, known before it runs (a killed part reports them "timed out")."""
    from benchmarks._gpu_part import sizes

    return sizes(smoke).figures(part)


def _child_env(smoke: bool, cache_dir: str | None) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if smoke:  # two CPU devices, whatever the caller's XLA_FLAGS say (the smoke shapes have 2 rows)
        env["JAX_PLATFORMS"] = "cpu"
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join([*flags, "--xla_force_host_platform_device_count=2"])
    if cache_dir:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    return env


def run_part(part: str, seconds: float, smoke: bool, cache_dir: str | None, workdir: Path) -> tuple[list, dict]:
    """Run one part in a child process with a hard deadline -> (its figure records, its device record)."""
    results = workdir / f"{part}.jsonl"
    cmd = [sys.executable, "-m", "benchmarks._gpu_part", part, str(results), str(time.time() + seconds)]
    if smoke:
        cmd.append("--smoke")
    status = None
    try:
        proc = subprocess.run(cmd, env=_child_env(smoke, cache_dir), timeout=seconds, stdin=subprocess.DEVNULL)
        if proc.returncode:
            status = f"failed: the part's process exited with status {proc.returncode}"
    except subprocess.TimeoutExpired:
        status = f"timed out (part deadline {seconds:.0f} s)"
    records, device = {}, {}
    if results.exists():
        for line in results.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "device":
                device = rec
            else:
                records[rec["name"]] = rec
    out = []
    for name in figure_names(part, smoke):
        out.append(records.pop(name, None) or {"part": part, "name": name, "value": None, "unit": "",
                                               "anchor": "", "status": status or "failed: no result", "note": ""})
    return out + list(records.values()), device


def format_value(rec: dict) -> str:
    v = rec.get("value")
    if v is None:
        return "-"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"


def table(records: list[dict], device: dict) -> str:
    rows = [("part", "figure", "measured", "anchor / target", "status", "note")]
    for r in records:
        unit = f" {r['unit']}" if r.get("unit") and r.get("value") is not None else ""
        rows.append((r["part"], r["name"], format_value(r) + unit, r.get("anchor", ""), r["status"],
                     r.get("note", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"device: {device.get('description', 'unknown (no part reported its device)')}"]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the code paths")
    p.add_argument("--budget", type=float, default=None, help="total seconds (default 570; smoke 1200)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--json", default="gpu_bench.json", help="where to write the results ('' = nowhere)")
    p.add_argument("--cache-dir", default=None,
                   help=f"persistent compilation cache (default {DEFAULT_CACHE}; smoke: none); 'none' = off")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = [s for s in parts if s not in WEIGHTS]
    if unknown:
        print(f"stvl bench gpu: unknown part(s) {unknown}; parts: {list(PARTS)}", file=sys.stderr)
        return 2
    budget = args.budget or (1200.0 if args.smoke else 570.0)
    cache = args.cache_dir or (None if args.smoke else str(DEFAULT_CACHE))
    cache = None if cache in (None, "none", "") else cache
    start = time.time()
    total_weight = sum(WEIGHTS[s] for s in parts) or 1
    records, device = [], {}
    with tempfile.TemporaryDirectory(prefix="stvl_gpu_bench_") as tmp:
        spent_weight = 0
        for part in parts:
            spent_weight += WEIGHTS[part]
            # deadline: this part's share plus whatever earlier parts left unused, never past the total budget
            until = start + budget * spent_weight / total_weight
            seconds = max(until - time.time(), 1.0)
            print(f"== {part}: {seconds:.0f} s", flush=True)
            recs, dev = run_part(part, seconds, args.smoke, cache, Path(tmp))
            records += recs
            device = device or dev
    wall = time.time() - start
    print()
    print(table(records, device))
    print(f"wall time {wall:.0f} s (budget {budget:.0f} s); compilation cache: {cache or 'off'}")
    if args.json:
        doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start)), "device": device,
               "smoke": args.smoke, "budget_s": budget, "wall_s": wall, "figures": records}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if all(not r["status"].startswith("failed") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
