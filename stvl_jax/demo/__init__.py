"""`stvl demo`: the main job on the embedded default (synthetic videos, tiny models, 8 simulated devices)."""

from stvl_jax.demo.main import main

__all__ = ["main"]
