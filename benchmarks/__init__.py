"""stvl-jax's benchmark scripts, installed with the wheel: `stvl bench list`, `stvl bench NAME [ARGS...]`
(or `python -m benchmarks.NAME` from the repository root). `common` holds their shared helpers."""

STVL_JAX_PACKAGE_DATA = True  # tells stvl_jax.packaged this is stvl-jax's package, not a user's `benchmarks`
