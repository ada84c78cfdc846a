"""Cost of checkpoint checksums: Orbax save/restore of a sharded state with and without the digest pass.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
        stvl bench checkpoint_integrity --mib 4 256 --repeat 3

For each size: a flat dict of fp32 arrays (sharded over all devices, on one device, or host numpy), written with
`checkpoint_io.write_checkpoint` (which records the checksums) and read back with `restore_params` with
verify on and off. Reports the median seconds of: digest pass alone, save (digest + Orbax write), the same Orbax
write alone, restore without / with verification, and the ratios with/without.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def _state(mib: int, layout: str):
    if layout == "sharded":
        sharding = NamedSharding(jax.make_mesh((len(jax.devices()),), ("fsdp",)), PartitionSpec("fsdp"))
    else:
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    rows = 1024
    n_arrays = 16
    cols = max(1, mib * (1 << 20) // (4 * rows * n_arrays))
    rng = np.random.default_rng(0)
    return {f"layer_{i}/kernel": jax.device_put(rng.standard_normal((rows, cols), np.float32), sharding)
            for i in range(n_arrays)}


def _median(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from stvl_jax import checkpoint_integrity, checkpoint_io

    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, nargs="+", default=[4, 256])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--layout", choices=["sharded", "single", "host"], default="sharded",
                   help="sharded over all devices (training), on one device (load_model without a mesh), or "
                        "restored as numpy (export)")
    args = p.parse_args()
    print(f"{len(jax.devices())} x {jax.devices()[0].device_kind}, layout {args.layout}")
    for mib in args.mib:
        state = _state(mib, args.layout)
        nbytes = sum(v.nbytes for v in state.values())
        targets = {k: (None if args.layout == "host" else
                       jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding)) for k, v in state.items()}
        root = Path(tempfile.mkdtemp(prefix="integrity_bench_"))
        try:
            checkpoint_integrity.digests(state)  # compile once
            # fresh arrays each time: a jax.Array caches its host copy after the first np.asarray
            copies = [jax.block_until_ready({k: v + 0 for k, v in state.items()}) for _ in range(args.repeat)]
            digest = _median(lambda: checkpoint_integrity.digests(copies.pop()), args.repeat)
            n = [0]

            def save():
                n[0] += 1
                checkpoint_io.write_checkpoint(root / f"c{n[0]}", {}, state, source={})

            def write_only():  # the same Orbax write without the checksum pass
                import orbax.checkpoint as ocp

                n[0] += 1
                checkpoint_io._checkpointer().save((root / f"w{n[0]}").absolute(),
                                                   args=ocp.args.PyTreeSave(checkpoint_io.nest(state)))

            save()
            write_only()
            saves, writes = [], []
            for _ in range(args.repeat):  # alternating, so that disk and page-cache state hit both alike
                saves.append(_median(save, 1))
                writes.append(_median(write_only, 1))
            t_save, write = statistics.median(saves), statistics.median(writes)
            ck = root / "c1"
            checkpoint_io.restore_params(ck, targets, verify=True)
            def restore(verify):  # blocks until the arrays are on their devices
                return jax.block_until_ready(checkpoint_io.restore_params(ck, targets, verify=verify))

            plain, verified = [], []
            for _ in range(args.repeat):
                plain.append(_median(lambda: restore(False), 1))
                verified.append(_median(lambda: restore(True), 1))
            t_plain, t_verified = statistics.median(plain), statistics.median(verified)
        finally:
            shutil.rmtree(root)
        print(f"{nbytes / 2**20:7.1f} MiB: digest {digest:.3f}s ({nbytes / digest / 2**30:.2f} GiB/s)  "
              f"save {t_save:.3f}s vs write alone {write:.3f}s (x{t_save / write:.2f})  "
              f"restore {t_plain:.3f}s vs verified {t_verified:.3f}s (x{t_verified / t_plain:.2f})")


if __name__ == "__main__":
    main()
