"""Host-side data path: video IO, Qwen-VL processing, the synthetic space-time set, annotation formats
(Streamo, STRIDE, QVHighlights) and Grain pipelines. Imports nothing heavy at package import time."""
