"""HF/PyTorch <-> stvl-jax checkpoint converters (`stvl convert ...`; see docs/conversion.md).

    qwen_vl_keys      declarative HF-key <-> param-path map + per-direction hooks
    qwen_vl_convert   tensor-level conversion (streaming, key/shape checks)
    qwen_vl_config    HF config.json <-> QwenVLConfig
    qwen_vl_io        directory-level import/export (safetensors shards <-> Orbax checkpoint)
    hf_checkpoint     reading HF directories tensor by tensor (pickles only behind a flag)
    safetensors_io    streaming safetensors reader/writer on numpy (bf16 via ml_dtypes)
    verify            logits comparison against transformers on a synthetic sample
    inspect_tree      key/shape/dtype trees of HF and stvl-jax checkpoints
    cli               `stvl convert {import,export,verify,inspect}`
"""

from converters.qwen_vl_config import from_hf_dict, to_hf_dict
from converters.qwen_vl_io import export_hf, import_hf

# `verify` stays `converters.verify.verify`: re-exporting it here would shadow its module
__all__ = ["export_hf", "from_hf_dict", "import_hf", "to_hf_dict"]
