"""Numpy-only VIRST rules a data pipeline may import: prompt templates and label masking (`prompts`)."""
