"""SAM2 in Flax NNX: the image path (Hiera + FPN neck, prompt encoder, mask decoder) as transformers' `Sam2Model`.

    config          typed config, HF config.json reader/writer
    hiera           Hiera trunk (windowed attention, query pooling, window + background position tables)
    neck            FPN neck + sine position encoding; `VisionEncoder` = Hiera + neck
    prompt_encoder  points (labels, padding), boxes, mask prompts; random Fourier features
"""
