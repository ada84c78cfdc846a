"""Numpy-only SAM2 host rules (imports no JAX): `preprocess` (the checkpoint's frame preprocessing)."""
