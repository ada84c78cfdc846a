"""`stvl bench NAME [ARGS...]`: run one of the product benchmarks, the modules of the `benchmarks` package (they
print ratios side by side; figures in docs/benchmarks.md). Installed with the wheel, so this works from anywhere.

    stvl bench list
    stvl bench forward_vs_torch --reps 10
"""

from __future__ import annotations

import runpy
import sys

from stvl_jax import packaged
from stvl_jax.errors import UserError


def available() -> list[str]:
    return packaged.benchmark_names()


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "list"):
        print("usage: stvl bench NAME [ARGS...]\n\nbenchmarks:\n" + "\n".join(f"  {n}" for n in available()))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in available():
        raise UserError(f"no benchmark {name!r}; available: {available()}")
    sys.argv = [f"stvl bench {name}", *rest]
    try:
        runpy.run_module(f"benchmarks.{name}", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
