"""stvl-jax: space-time video-language models in JAX/Flax.

The public API is imported lazily so that host-side code (Grain workers, the CLI's `--help`) does not pay
for importing JAX and Flax.

    model = stvl_jax.load_model("ckpt/", mesh=mesh)      # stvl-jax checkpoint (import, training) or HF directory
                                                          # (Qwen-VL, or SAM2: `Sam2ImageModel` / `Sam2VideoModel`)
    logits = model(**batch).logits                        # batch: the HF processor's dict of numpy arrays
    ids = stvl_jax.generate(model, batch, max_new_tokens=16)
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("stvl_jax.models.dispatch", "load_model"),  # Qwen-VL or SAM2, by the checkpoint
    "save_model": ("stvl_jax.models.dispatch", "save_model"),
    "generate": ("stvl_jax.models.qwen_vl.generate", "generate"),
    "make_mesh": ("stvl_jax.sharding", "make_mesh"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'stvl_jax' has no attribute {name!r}")
