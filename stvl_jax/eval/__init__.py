"""Evaluation: metrics, the Streamo streaming evaluation, QVHighlights timestamp Yes/No, plots, `stvl eval`."""
