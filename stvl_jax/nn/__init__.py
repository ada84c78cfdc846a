"""Shared layers: linear/embedding with logical axes, norms, RoPE variants, attention, MLPs."""
