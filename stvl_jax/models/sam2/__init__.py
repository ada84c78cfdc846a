"""SAM2 in Flax NNX: the image path (Hiera + FPN neck, prompt encoder, mask decoder) as transformers' `Sam2Model`.

    config          typed config, HF config.json reader/writer
    hiera           Hiera trunk (windowed attention, query pooling, window + background position tables)
    neck            FPN neck + sine position encoding; `VisionEncoder` = Hiera + neck
    prompt_encoder  points (labels, padding), boxes, mask prompts; random Fourier features
    two_way_transformer  the decoder's two-way attention blocks and MLP heads
    mask_decoder    multimask outputs, IoU head, object-score head, high-res skips, dynamic multimask
    image_model     `Sam2ImageModel`: pixels + prompts -> low-res mask logits, IoU scores, object-score logits

The HF key map is `converters/sam2_keys.py`.
"""
