"""`stvl bench NAME [ARGS...]`: run one of the scripts in `benchmarks/` (they print ratios side by side).

    stvl bench list
    stvl bench forward_vs_torch --reps 10
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from stvl_jax.errors import UserError

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def available() -> list[str]:
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if p.stem != "common" and not p.stem.startswith("_"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "list"):
        print("usage: stvl bench NAME [ARGS...]\n\nbenchmarks:\n" + "\n".join(f"  {n}" for n in available()))
        return 0
    name, rest = argv[0], argv[1:]
    script = BENCH_DIR / f"{name}.py"
    if not script.is_file():
        raise UserError(f"no benchmark {name!r}; available: {available()}")
    sys.argv = [str(script), *rest]
    sys.path.insert(0, str(BENCH_DIR))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:
        return int(e.code or 0)
    return 0
