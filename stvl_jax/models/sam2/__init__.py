"""SAM2 in Flax NNX: the image path (transformers' `Sam2Model`) and the video model (`Sam2VideoModel`).

    config          typed config, HF config.json reader/writer
    hiera           Hiera trunk (windowed attention, query pooling, window + background position tables)
    neck            FPN neck + sine position encoding; `VisionEncoder` = Hiera + neck
    prompt_encoder  points (labels, padding), boxes, mask prompts; random Fourier features
    two_way_transformer  the decoder's two-way attention blocks and MLP heads
    mask_decoder    multimask outputs, IoU head, object-score head, high-res skips, dynamic multimask
    image_model     `Sam2ImageModel`: pixels + prompts -> low-res mask logits, IoU scores, object-score logits
    position        sine position encodings (2-D tables of the FPN levels and the memory; 1-D pointer positions)
    memory_config / memory_encoder / memory_attention / rope_axial / memory_bank   the video memory
    video_config    `Sam2VideoConfig` (image config + memory configs + tracking rules), HF config.json reader/writer
    video_model     `Sam2VideoModel`: the image model + memory encoder, memory attention, memory embeddings
    tracker_step    one jitted tracking step: a frame, all objects, their fixed-capacity memory banks (pure)
    tracker         `track()` / `Tracker`: prompts on any frames, several objects, forward / reverse propagation

The HF key maps are `converters/sam2_keys.py` (image) and `converters/sam2_video_keys.py` (whole video model).
"""
