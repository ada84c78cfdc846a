"""Learnability probes: what the tiny recipes learn to read within CPU minutes. Run from the repository root,
e.g. `python -m research.probes.streamo_visual_probe --probes pair`; results and readings in research/notes/.
Their own tests: `python -m pytest research/probes/tests` (not in the default suite)."""
