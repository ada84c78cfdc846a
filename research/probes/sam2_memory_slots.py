"""Cost of SAM2's memory attention and memory encoder vs the number of memory slots, scanned vs unrolled layers
(research/notes/sam2_speed.md): transformers' default `Sam2VideoConfig` shapes (Hiera-tiny) at 256 px, random
weights, fp32, jitted, calls interleaved; min and median ms. Run one-threaded for a ratio that ignores the load:

    OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        python -m research.probes.sam2_memory_slots
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import interleaved
from benchmarks.sam2_tracking import hf_video_config
from stvl_jax.models.sam2.memory_attention import MemoryAttention
from stvl_jax.models.sam2.memory_encoder import MemoryEncoder
from stvl_jax.models.sam2.video_config import from_hf

SLOTS = (10, 7, 3)  # cond_capacity 4 + num_maskmem - 1; cond_capacity 1 + 6; a real 3-frame memory
POINTER_TOKENS = 76  # (4 + 16 - 1) pointers x 4 tokens


def main(reps: int = 15) -> None:
    cfg = from_hf(hf_video_config("tiny", 256).to_dict())
    rng = np.random.default_rng(0)
    f = lambda *s: jnp.asarray(rng.normal(size=s).astype(np.float32))  # noqa: E731
    att_state = nnx.state(MemoryAttention(cfg.memory_attention, rngs=nnx.Rngs(0)))
    enc_state = nnx.state(MemoryEncoder(cfg.memory_encoder, rngs=nnx.Rngs(1)))
    inputs = {}
    for slots in SLOTS:  # the same inputs both ways
        m = slots * 256 + POINTER_TOKENS
        inputs[slots] = (f(1, 256, 256), f(1, m, 64), f(1, 256, 256), f(1, m, 64), jnp.ones((1, m), bool))
    px, mk = f(1, 16, 16, 256), f(1, 256, 256)
    fns = {}
    for scan in (True, False):  # the same weights both ways
        g = nnx.graphdef(MemoryAttention(cfg.memory_attention, scan_layers=scan, rngs=nnx.Rngs(0)))
        run = jax.jit(lambda st, a, b, c, d, mk, g=g: nnx.merge(g, st)(
            a, b, c, d, num_object_pointer_tokens=POINTER_TOKENS, memory_mask=mk))
        for slots, args in inputs.items():
            fns[f"memory attention, {slots:2} slots, {'scanned' if scan else 'unrolled'}"] = (
                lambda run=run, args=args: jax.block_until_ready(run(att_state, *args)))
        g2 = nnx.graphdef(MemoryEncoder(cfg.memory_encoder, scan_layers=scan, rngs=nnx.Rngs(1)))
        run2 = jax.jit(lambda st, p, mk, g=g2: nnx.merge(g, st)(p, mk)[0])
        fns[f"memory encoder, {'scanned' if scan else 'unrolled'}"] = (
            lambda run2=run2, px=px, mk=mk: jax.block_until_ready(run2(enc_state, px, mk)))
    outs = {k: np.asarray(fn()) for k, fn in fns.items()}
    for k in outs:
        if "unrolled" in k:
            print(f"max |unrolled - scanned| {k}: {np.abs(outs[k] - outs[k.replace('unrolled', 'scanned')]).max():.1e}")
    times = interleaved(fns, reps=reps, warmup=0)  # outs above were the warm-up
    for k, ts in times.items():
        print(f"{k:42} min {1e3 * min(ts):7.1f} ms  median {1e3 * float(np.median(ts)):7.1f} ms")


if __name__ == "__main__":
    main()
