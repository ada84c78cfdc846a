"""Research code that is not part of the product: learnability probes (`research/probes/`, run from the
repository root as `python -m research.probes.NAME`) and dated measurement notes (`research/notes/`).
Not installed with the wheel, not in the default test suite."""
