"""Checkpoint conversion and loading at 2B scale: time and peak RAM of `stvl convert import` / `export`, and of
loading the same Qwen3-VL-2B-shaped bf16 checkpoint (random weights) three ways: transformers' `from_pretrained`,
`stvl_jax.load_model(HF dir)` (read in place) and `stvl_jax.load_model(stvl checkpoint)` (Orbax).

    stvl bench convert_2b [--workdir /tmp/stvl_convert_2b] [--max-shard-size 2GB] [--repeats 3] [--keep]

The HF checkpoint is written tensor by tensor (no torch model is built). Each measured step runs in a fresh
child process that reports its own wall time and peak RSS (VmHWM) plus its RSS before the step (Python +
JAX/torch imports), so the table shows what the step itself needs. The three loads run `--repeats` rounds in
turn (medians reported), so a busy machine slows them alike; their wall times are also given as ratios to
`from_pretrained`. Finally every exported tensor is compared bit for bit with the source, and the two
`load_model`s must give the same parameters (a checksum of every parameter).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def qwen3_vl_2b_config():
    from stvl_jax.models.qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig

    return QwenVLConfig(
        family="qwen3_vl", tie_word_embeddings=True, eos_token_id=(151645,), pad_token_id=151643,
        text=TextConfig(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                        num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=5e6,
                        mrope_section=(24, 20, 20), mrope_interleaved=True, qk_norm=True,
                        max_position_embeddings=262144),
        vision=VisionConfig(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                            patch_size=16, num_position_embeddings=2304, deepstack_visual_indexes=(5, 11, 17)),
    )


def write_random_hf(out: Path, max_shard_size: str) -> int:
    """Random bf16 HF checkpoint of the 2B shapes; returns its size in bytes."""
    import ml_dtypes

    from converters.qwen_vl_config import to_hf_dict
    from converters.qwen_vl_keys import key_map
    from converters.safetensors_io import parse_size, plan_shards, write_shards

    config = qwen3_vl_2b_config()
    bf16 = np.dtype(ml_dtypes.bfloat16)
    specs = [(name, e.hf_shape, bf16) for e in key_map(config) for name in e.hf_names()]
    rng = np.random.default_rng(0)

    def tensors():
        for name, shape, _ in specs:
            yield name, (rng.standard_normal(shape, np.float32) * 0.02).astype(bf16)

    out.mkdir(parents=True)
    write_shards(out, plan_shards(specs, parse_size(max_shard_size)), tensors())
    (out / "config.json").write_text(json.dumps(to_hf_dict(config, torch_dtype="bfloat16"), indent=2))
    return sum(int(np.prod(s)) * 2 for _, s, _ in specs)


# ------------------------------------------------------------------------------------------ child steps
def _status(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process in bytes. Not getrusage's ru_maxrss: Linux carries the
    parent's high-water mark across fork + exec into it, so a child would report at least the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(step: str, src: str, dst: str) -> None:
    if step == "transformers":
        import torch
        import transformers

        base = _status("VmRSS")
        t = time.perf_counter()
        model = transformers.Qwen3VLForConditionalGeneration.from_pretrained(src, dtype=torch.bfloat16)
    else:
        import jax  # noqa: F401 - counted in the baseline, as for torch above

        from converters.cli import main
        from stvl_jax.models.qwen_vl.loading import load_model

        base = _status("VmRSS")
        t = time.perf_counter()
        if step == "import":
            assert main(["import", "--hf", src, "--out", dst, "--quiet"]) == 0
        elif step == "export":
            assert main(["export", "--ckpt", src, "--out", dst, "--max-shard-size", "2GB", "--quiet"]) == 0
        elif step == "load_model":
            from flax import nnx

            model = load_model(src)
            jax.block_until_ready([v.get_value() for _, v in nnx.to_flat_state(nnx.state(model))])
    seconds = time.perf_counter() - t
    peak = _status("VmHWM")
    out = {"seconds": seconds, "peak": peak, "base": base}
    if step == "transformers":  # from_pretrained maps the files; the weights are read on first use
        t = time.perf_counter()
        with torch.no_grad():
            for p in model.parameters():
                p.float().sum()
        out["touch_seconds"] = time.perf_counter() - t
    if step == "load_model":  # after the measurement: same parameters whichever format was read
        import jax.numpy as jnp

        out["checksum"] = [float(jnp.sum(v.get_value().astype(jnp.float32)))
                           for _, v in sorted(nnx.to_flat_state(nnx.state(model)), key=lambda kv: kv[0])]
    print(json.dumps(out))


def run_child(step: str, src: Path, dst: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.convert_2b", "--child", step, str(src), str(dst)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if res.returncode:
        raise SystemExit(f"{step} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> int:
    """Number of tensors that differ (bitwise) between two HF directories."""
    from converters.hf_checkpoint import HFCheckpoint

    bad = 0
    with HFCheckpoint(a) as x, HFCheckpoint(b) as y:
        if sorted(x.names) != sorted(y.names):
            return -1
        for name in x.names:
            u, v = x.get(name), y.get(name)
            bad += not (u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u.view(np.uint16),
                                                                                      v.view(np.uint16)))
    return bad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/stvl_convert_2b")
    p.add_argument("--max-shard-size", default="2GB", help="shard size of the source checkpoint")
    p.add_argument("--keep", action="store_true", help="keep the checkpoints")
    p.add_argument("--skip-transformers", action="store_true")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the three loads (medians reported)")
    p.add_argument("--child", nargs=3, metavar=("STEP", "SRC", "DST"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    hf, ckpt, out = work / "hf", work / "ckpt", work / "export"
    t = time.perf_counter()
    size = write_random_hf(hf, args.max_shard_size)
    n_files = len(list(hf.glob("*.safetensors")))
    print(f"wrote {hf}: {size / 1e9:.2f} GB bf16 in {n_files} shard(s) ({time.perf_counter() - t:.0f} s)")

    rows = [("stvl convert import", run_child("import", hf, ckpt)),
            ("stvl convert export", run_child("export", ckpt, out))]
    loads = {"transformers from_pretrained (bf16)": ("transformers", hf),
             "load_model(HF dir), 1 CPU device": ("load_model", hf),
             "load_model(stvl ckpt), 1 CPU device": ("load_model", ckpt)}
    if args.skip_transformers:
        del loads["transformers from_pretrained (bf16)"]
    runs = {name: [] for name in loads}
    for _ in range(args.repeats):  # in turn, so the machine's other load falls on all of them alike
        for name, (step, src) in loads.items():
            runs[name].append(run_child(step, src, src))
    for name, rs in runs.items():
        rows.append((name, {"seconds": float(np.median([r["seconds"] for r in rs])),
                            "peak": max(r["peak"] for r in rs), "base": min(r["base"] for r in rs)}))
    sums = [runs[n][0]["checksum"] for n in runs if n.startswith("load_model")]
    same = all(np.array_equal(sums[0], s) for s in sums)
    diff = compare(hf, out)

    print(f"\ncheckpoint: Qwen3-VL-2B shapes, {size / 1e9:.2f} GB bf16; machine: {os.cpu_count()} CPU cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, load average "
          f"{os.getloadavg()[1]:.1f} over the last 5 min (other processes share the cores)")
    ref = dict(rows).get("transformers from_pretrained (bf16)")
    print(f"{'step':<38} {'wall s':>7} {'vs HF':>6} {'peak RSS GB':>12} {'peak/size':>10} {'step RSS GB':>12} "
          f"{'step/size':>10}")
    for name, r in rows:
        step_rss = r["peak"] - r["base"]
        vs = f"{r['seconds'] / ref['seconds']:.2f}" if ref and name in runs else ""
        print(f"{name:<38} {r['seconds']:>7.1f} {vs:>6} {r['peak'] / 1e9:>12.2f} {r['peak'] / size:>10.2f} "
              f"{step_rss / 1e9:>12.2f} {step_rss / size:>10.2f}")
    for name, rs in runs.items():
        each = ", ".join(f"{r['seconds']:.1f}" for r in rs)
        print(f"  {name}: wall s of each round {each}")
    print("(step RSS = peak minus the RSS after importing the libraries)")
    tf = runs.get("transformers from_pretrained (bf16)")
    if tf:
        touch = float(np.median([r["touch_seconds"] for r in tf]))
        print(f"(from_pretrained leaves the weights memory-mapped, unread: reading each once afterwards took "
              f"{touch:.1f} s more, median)")
    print("(loads: median wall over the rounds, 'vs HF' = ÷ from_pretrained's median; peak = the largest)")
    print(f"export vs source: {'all tensors bit-exact' if diff == 0 else f'{diff} tensors DIFFER'}; "
          f"load_model HF dir vs stvl ckpt: {'same parameters' if same else 'parameters DIFFER'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if diff or not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
