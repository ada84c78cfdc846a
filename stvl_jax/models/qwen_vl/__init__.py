"""Qwen-VL video LLMs (Qwen3-VL, Qwen2.5-VL) in Flax NNX, numerically equal to HF transformers."""
