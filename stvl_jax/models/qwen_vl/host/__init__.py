"""Numpy-only Qwen-VL host rules, shared by `data_pipelines` and the model layer (imports no JAX):

- `preprocess`: the preprocessing config a checkpoint carries + resize / normalize / patchify;
- `positions`: M-RoPE position ids (the one implementation);
- `placeholders`: how many placeholder tokens stand for an image / a video block.
"""
