"""Annotation formats of the seed systems: Streamo to-stream, STRIDE activation windows, QVHighlights Yes/No."""
