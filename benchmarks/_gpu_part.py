"""One part of `stvl bench gpu`, run in its own process: `python -m benchmarks._gpu_part PART RESULTS DEADLINE
[--smoke]`. Appends one JSON line per figure to RESULTS as soon as the figure is measured (so a part killed at
its deadline keeps what it had), preceded by a line describing the device.

`Sizes` holds the shapes of the real run (a Qwen3-VL-2B, SAM2 Hiera-L at 1024 px, VIRST made of both) and of
`--smoke` (the tiny presets, shapes that run in seconds on a CPU); both go through the same code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
import traceback

# datasheet figures, matched as substrings of jax's device_kind (lower case), first match wins
HBM_BYTES_PER_S: tuple[tuple[str, float, str], ...] = (
    ("h100 pcie", 2.0e12, "H100 PCIe HBM2e 2.0 TB/s"),
    ("h200", 4.8e12, "H200 HBM3e 4.8 TB/s"),
    ("h100", 3.35e12, "H100 SXM HBM3 3.35 TB/s"),
)
# which datasheet figure `stvl_jax.train.flops.PEAK_FLOPS` used for the MFU denominator
PEAK_SOURCE: tuple[tuple[str, str], ...] = (
    ("h100 pcie", "989 TFLOP/s, the H100 SXM bf16 dense figure (the PCIe datasheet gives 756: MFU understated)"),
    ("h200", "H200 bf16 dense 989 TFLOP/s (the H100 SXM figure)"),
    ("h100", "H100 SXM bf16 dense 989 TFLOP/s"),
)


def lookup(table, device_kind: str):
    kind = device_kind.lower()
    return next((row[1:] for row in table if row[0] in kind), None)


@dataclasses.dataclass(frozen=True)
class Sizes:
    lm_preset: str  # configs/models preset of the Qwen3-VL parts
    train_shapes: tuple[tuple[int, int], ...]  # (sequence length, rows) per MFU figure
    train_video_grid: tuple[int, int, int]  # (t, h, w) patches of each row's video
    train_reps: int
    decode_batches: tuple[int, ...]
    decode_prompt: int  # prompt tokens (text only)
    decode_new: int  # generated tokens per row
    decode_reps: int
    stride_preset: str
    stride_dtype: str
    stride_window: int  # slots
    stride_chunk: int  # frames per chunk
    stride_max_window: int  # frames per mega-window
    stride_frames: int
    stride_size: int  # frame side (px)
    stride_runs: int  # timed passes over the stream
    sam2_hiera: str | None  # benchmarks.sam2_vs_torch.HIERA size, or None: the packaged sam2_tiny preset
    sam2_size: int
    sam2_dtype: str
    sam2_frames: int
    sam2_reps: int
    virst_frames: int  # video frames segmented per clip (every one tracked; 8 of them to the LLM)
    virst_frame_hw: tuple[int, int]  # decoded frame size (px)
    virst_dtype: str
    virst_reps: int
    check_rows: int
    check_len: int
    check_video_grid: tuple[int, int, int]

    def train_name(self, seq: int, rows: int) -> str:
        return f"train MFU, {rows} x {seq} tokens"

    def figures(self, part: str) -> list[str]:
        return {
            "train": [self.train_name(s, r) for s, r in self.train_shapes],
            "stride": ["STRIDE activation step (cached prefix)"],
            "decode": [f"decode, batch {b}" for b in self.decode_batches],
            "sam2": ["SAM2 tracking"],
            "virst": ["VIRST end to end"],
            "check": ["fp32 logits, device vs CPU", "bf16 vs fp32 logits", "sharded vs 1 device (grads)"],
        }[part]


FULL = Sizes(lm_preset="qwen3vl_2b", train_shapes=((2048, 8), (4096, 4)), train_video_grid=(8, 28, 28),
             train_reps=4, decode_batches=(1, 32), decode_prompt=32, decode_new=128, decode_reps=3,
             stride_preset="qwen3vl_2b", stride_dtype="bfloat16", stride_window=256, stride_chunk=32,
             stride_max_window=128, stride_frames=128, stride_size=512, stride_runs=2, sam2_hiera="large",
             sam2_size=1024, sam2_dtype="bfloat16", sam2_frames=16, sam2_reps=2, virst_frames=32,
             virst_frame_hw=(480, 854), virst_dtype="bfloat16", virst_reps=3, check_rows=2, check_len=256,
             check_video_grid=(2, 16, 16))
SMOKE = Sizes(lm_preset="qwen3vl_tiny", train_shapes=((64, 2), (96, 2)), train_video_grid=(2, 4, 4),
              train_reps=2, decode_batches=(1, 4), decode_prompt=8, decode_new=4, decode_reps=1,
              stride_preset="stride_tiny", stride_dtype="float32", stride_window=8, stride_chunk=4,
              stride_max_window=8, stride_frames=8, stride_size=64, stride_runs=1, sam2_hiera=None, sam2_size=128,
              sam2_dtype="float32", sam2_frames=3, sam2_reps=1, virst_frames=4, virst_frame_hw=(64, 64),
              virst_dtype="float32", virst_reps=1, check_rows=2, check_len=48, check_video_grid=(2, 4, 4))


def sizes(smoke: bool) -> Sizes:
    return SMOKE if smoke else FULL


def one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]


class Emitter:
    """Writes figure records (JSON lines) and knows the part's deadline."""

    def __init__(self, part: str, path: str, deadline: float, smoke: bool):
        self.part, self.path, self.deadline, self.smoke = part, path, deadline, smoke
        self.done: set[str] = set()

    def left(self) -> float:
        return self.deadline - time.time()

    def _write(self, rec: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def emit(self, name: str, value, unit: str, anchor: str, note: str = "", status: str = "ok", **fields):
        self.done.add(name)
        self._write({"part": self.part, "name": name, "value": None if value is None else float(value),
                     "unit": unit, "anchor": anchor, "status": status, "note": note, **fields})
        print(f"   {name}: {'-' if value is None else f'{value:.4g}'} {unit}  [{status}] {note}", flush=True)

    @contextlib.contextmanager
    def guard(self, name: str):
        """Run one figure: an exception (an out-of-memory shape, say) fails that figure only, in one line."""
        try:
            yield
        except Exception as e:
            traceback.print_exc()
            self.emit(name, None, "", "", status=f"failed: {one_line(e)}")

    def skip(self, name: str, reason: str, anchor: str = "") -> None:
        self.emit(name, None, "", anchor, status=f"skipped: {reason}")

    def device(self) -> None:
        import jax

        devs = jax.devices()
        kind = devs[0].device_kind
        self._write({"kind": "device", "platform": devs[0].platform, "device_kind": kind, "count": len(devs),
                     "jax": jax.__version__,
                     "description": f"{len(devs)} x {kind} ({devs[0].platform}), JAX {jax.__version__}"})


def enable_compilation_cache() -> None:
    """The persistent compilation cache is configured by JAX_COMPILATION_CACHE_DIR (set by the runner)."""
    import os

    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    part, path, deadline = argv[0], argv[1], float(argv[2])
    smoke = "--smoke" in argv[3:]
    out = Emitter(part, path, deadline, smoke)
    sz = sizes(smoke)
    enable_compilation_cache()
    out.device()
    from benchmarks import _gpu_lm, _gpu_video

    fn = {"train": _gpu_lm.train, "decode": _gpu_lm.decode, "check": _gpu_lm.check, "stride": _gpu_video.stride,
          "sam2": _gpu_video.sam2, "virst": _gpu_video.virst}[part]
    try:
        fn(sz, out)
    except Exception as e:  # report the part's remaining figures as failed (one line), keep the traceback
        traceback.print_exc()
        reason = one_line(e)
        for name in sz.figures(part):
            if name not in out.done:
                out.emit(name, None, "", "", status=f"failed: {reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
