"""HF/PyTorch <-> stvl-jax checkpoint converters (`stvl convert ...`; see docs/conversion.md).

    qwen_vl_keys      declarative HF-key <-> param-path map + per-direction hooks
    qwen_vl_convert   tensor-level conversion (streaming, key/shape checks)
    qwen_vl_config    HF config.json <-> QwenVLConfig
    qwen_vl_io        directory-level import/export (safetensors shards <-> Orbax checkpoint)
    lora_export       LoRA adapters on export: merged, or a PEFT adapter directory (`write_peft_adapter`)
    hf_checkpoint     reading HF directories tensor by tensor (pickles only behind a flag)
    safetensors_io    streaming safetensors reader/writer on numpy (bf16 via ml_dtypes)
    verify            logits comparison against transformers on a synthetic sample
    inspect_tree      key/shape/dtype trees of HF and stvl-jax checkpoints
    sam2_convert      SAM2 (HF Sam2Model / Sam2VideoModel) <-> stvl-jax; `read_sam2_hf` backs load_model(hf_dir)
    sam2_meta         Meta's original sam2.1_hiera_*.pt -> HF names and config (behind --meta-pt)
    sam2_verify       SAM2 mask logits against transformers on a synthetic image + box prompt
    cli               `stvl convert {import,export,verify,inspect}`
"""

from converters.lora_export import write_peft_adapter
from converters.qwen_vl_config import from_hf_dict, to_hf_dict
from converters.qwen_vl_io import export_hf, import_hf
from converters.sam2_convert import export_sam2, import_sam2, read_sam2_hf

# `verify` stays `converters.verify.verify`: re-exporting it here would shadow its module
__all__ = ["export_hf", "export_sam2", "from_hf_dict", "import_hf", "import_sam2", "read_sam2_hf", "to_hf_dict",
           "write_peft_adapter"]
