"""VIRST (AIDASLab/VIRST, CVPR 2026) on this project's Qwen-VL and SAM2, in Flax NNX.

    config          VirstConfig (llm, sam2, seg, prompter, initial_fusion, anchors, loss); load_virst_config
    host/prompts    question / answer templates, label masking (numpy; pipelines import it)
    seg_tokens      [SEG] in the vocabulary, its positions and hidden states, the generating-mode hook
    rope3d          3D RoPE of the SegPrompter's cross-attention
    seg_prompter    SegPrompter: [SEG] hidden states x SAM2 features -> per-frame SAM2 prompts
    initial_fusion  optional pre-LLM fusion of the [SEG] input embeddings
    model           VirstModel: LLM + SAM2 + fusion modules; one forward per video
    tdau            anchors and SAM2 propagation with anchor + FIFO memory
    loading         upstream VIRST state dict -> SegPrompter / initial fusion (SAM2 via converters.virst_pt)
"""
