"""SAM2 checkpoints between Hugging Face (`Sam2Model` / `Sam2VideoModel` safetensors, or Meta's original
`sam2.1_hiera_*.pt` behind `--meta-pt`) and stvl-jax (Orbax, `stvl_jax.models.sam2.loading`).

    read_sam2_hf      HF directory -> `Sam2Read` (family, typed config, our flat params, preprocessing, provenance)
    import_sam2       HF directory or Meta .pt -> stvl-jax checkpoint
    export_sam2       stvl-jax checkpoint -> HF directory (safetensors, config.json, processor configs)

Family by config.json model_type: `sam2` -> the image model, `sam2_video` -> image + memory. Tensors move
through the key maps (`sam2_keys` for the image path; the video model's map for `sam2_video`), so export writes
the same names, shapes, dtypes and bytes as the HF state dict that was imported. The HF config.json and processor
configs seen on import are kept in `source` and written back on export when they still describe the checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converters.hf_checkpoint import HFCheckpoint
from stvl_jax.errors import CheckpointError, ConfigError
from stvl_jax.models.sam2.host.preprocess import Sam2PreprocessConfig

PREPROCESSOR_FILE = "preprocessor_config.json"
VIDEO_PREPROCESSOR_FILE = "video_preprocessor_config.json"
_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, what SAM2's HF processors resize with
_BICUBIC = 3  # a checkpoint preprocessed as Meta's predictor does (PIL bicubic): the nearest HF setting
FAMILIES = ("sam2", "sam2_video")  # = stvl_jax.models.sam2.loading.FAMILIES (not imported here: it pulls in Flax)


@dataclasses.dataclass
class Sam2Read:
    family: str
    config: Any  # Sam2Config or the video model's config
    params: dict[str, np.ndarray]  # our flat layout
    preprocessing: Sam2PreprocessConfig
    source: dict[str, Any]  # provenance: recorded as stvl_config.json "source"


# ------------------------------------------------------------------------------------------ families
def config_from_hf(family: str, hf_config: Mapping[str, Any]):
    """The typed config of an HF config.json dict; `CheckpointError` naming the bad key otherwise."""
    try:
        if family == "sam2":
            from stvl_jax.models.sam2.config import from_hf

            return from_hf(hf_config, allow_video_keys=hf_config.get("model_type") == "sam2_video")
        from stvl_jax.models.sam2.video_config import from_hf as video_from_hf

        return video_from_hf(hf_config)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def config_to_hf(family: str, config) -> dict[str, Any]:
    if family == "sam2":
        from stvl_jax.models.sam2.config import to_hf

        return to_hf(config)
    from stvl_jax.models.sam2.video_config import to_hf as video_to_hf

    return video_to_hf(config)


def key_map(family: str, config) -> list:
    """The family's key map: every tensor of HF `Sam2Model` / `Sam2VideoModel` <-> our params."""
    if family == "sam2":
        from converters.sam2_keys import key_map as image_key_map

        return image_key_map(config)
    from converters.sam2_video_keys import video_key_map

    return video_key_map(config)


def hf_names(family: str, config) -> list[tuple[str, tuple[int, ...]]]:
    """[(HF tensor name, HF shape)] of every tensor of the family's HF model, in key-map order."""
    return [(n, e.hf_shape) for e in key_map(family, config) for n in e.hf_names()]


def hf_to_flat(family: str, config, hf_state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF state dict -> our flat params (names, shapes checked both ways; unknown tensors refused)."""
    from converters.sam2_keys import entries_to_ours
    from stvl_jax.models.sam2.loading import param_specs

    shapes = {k: s for k, (s, _) in param_specs(family, config).items()}
    return entries_to_ours(key_map(family, config), dict(hf_state), shapes,
                           what="SAM2" if family == "sam2" else "SAM2 video")


def flat_to_hf(family: str, config, flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from converters.sam2_keys import entries_to_hf

    return entries_to_hf(key_map(family, config), flat)


def family_of_hf(hf_config: Mapping[str, Any], where: str) -> str:
    model_type = hf_config.get("model_type") if isinstance(hf_config, Mapping) else None
    if model_type not in FAMILIES:
        raise CheckpointError(f"{where} has model_type {model_type!r}, not a SAM2 model (expected one of "
                              f"{FAMILIES})")
    return model_type


# ------------------------------------------------------------------------------------------ preprocessing
def _processor_preprocessing(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Sam2PreprocessConfig fields from one HF processor config dict."""
    size = data.get("size") or {}
    side = size.get("height", size.get("longest_edge")) if isinstance(size, Mapping) else None
    if isinstance(size, Mapping) and size.get("width", side) != side or not isinstance(side, int):
        raise CheckpointError(f"{where}: size {size!r} is not a square side (SAM2 resizes to S x S)")
    if data.get("resample", _BILINEAR) != _BILINEAR:
        raise CheckpointError(f"{where}: resample {data.get('resample')!r} is not bilinear (2), the only resize "
                              "SAM2's HF processors use")
    if data.get("do_normalize", True) is False or data.get("do_rescale", True) is False or \
            abs(float(data.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise CheckpointError(f"{where}: only rescale by 1/255 followed by normalisation is supported")
    out: dict[str, Any] = {"image_size": side}
    for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
        if data.get(theirs) is not None:
            out[ours] = tuple(float(v) for v in data[theirs])
    return out


def hf_dir_preprocessing(directory: Path, family: str, image_size: int = 1024
                         ) -> tuple[Sam2PreprocessConfig, dict[str, Any]]:
    """(the checkpoint's preprocessing, provenance {"processor_files": {name: dict}}) from the processor configs
    next to config.json (the video one first for sam2_video); SAM2's default at the model's `image_size` when
    there are none."""
    files: dict[str, Any] = {}
    for name in (PREPROCESSOR_FILE, VIDEO_PREPROCESSOR_FILE):
        f = directory / name
        if f.is_file():
            try:
                files[name] = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{str(f)!r} is not valid JSON: {e}") from None
    order = (VIDEO_PREPROCESSOR_FILE, PREPROCESSOR_FILE) if family == "sam2_video" else \
        (PREPROCESSOR_FILE, VIDEO_PREPROCESSOR_FILE)
    fields: dict[str, Any] = {}
    for name in order:
        if isinstance(files.get(name), Mapping):
            fields = _processor_preprocessing(files[name], str(directory / name))
            break
    fields = {"image_size": image_size, **fields}
    try:
        pre = Sam2PreprocessConfig.from_dict(fields, source=str(directory))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return pre, ({"processor_files": files} if files else {})


def processor_files(pre: Sam2PreprocessConfig, family: str, stored: Mapping[str, Any] | None
                    ) -> dict[str, dict[str, Any]]:
    """{file name: dict} of the processor configs to export: those recorded on import when they still describe
    `pre`, else fresh ones in the layout of the SAM2 hub repositories."""
    names = (PREPROCESSOR_FILE, VIDEO_PREPROCESSOR_FILE) if family == "sam2_video" else (PREPROCESSOR_FILE,)
    stored = stored if isinstance(stored, Mapping) else {}
    out = {}
    for name in names:
        old = stored.get(name)
        if isinstance(old, Mapping):
            try:
                seen = Sam2PreprocessConfig.from_dict(_processor_preprocessing(old, name))
                if seen.model_copy(update={"resample": pre.resample, "mask_threshold": pre.mask_threshold}) == pre:
                    out[name] = copy.deepcopy(dict(old))
                    continue
            except (CheckpointError, ConfigError):
                pass
        out[name] = _fresh_processor(pre, family, video=name == VIDEO_PREPROCESSOR_FILE)
    return out


def _fresh_processor(pre: Sam2PreprocessConfig, family: str, *, video: bool) -> dict[str, Any]:
    s = pre.image_size
    d = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
         "image_mean": list(pre.mean), "image_std": list(pre.std),
         "resample": _BICUBIC if pre.resample == "pil_bicubic" else _BILINEAR,
         "rescale_factor": 1 / 255, "size": {"height": s, "width": s},
         "processor_class": "Sam2VideoProcessor" if family == "sam2_video" else "Sam2Processor"}
    if video:
        d["video_processor_type"] = "Sam2VideoVideoProcessor"
    else:
        d.update(image_processor_type="Sam2ImageProcessorFast", mask_size={"height": s // 4, "width": s // 4})
    return d


# ------------------------------------------------------------------------------------------ import
def sam2_from_hf_state(hf_config: Mapping[str, Any], hf_state: Mapping[str, np.ndarray], *, where: str,
                       source: dict[str, Any], preprocessing: Sam2PreprocessConfig | None = None,
                       family: str | None = None) -> Sam2Read:
    """HF config.json dict + state dict -> `Sam2Read` (`family` None: the config's model_type)."""
    from stvl_jax.models.sam2.loading import default_preprocessing

    family = family or family_of_hf(hf_config, where)
    config = config_from_hf(family, hf_config)
    try:
        params = hf_to_flat(family, config, hf_state)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None
    pre = preprocessing or default_preprocessing(config)
    if pre.image_size != config.image_size:
        raise CheckpointError(f"{where}: its processor config resizes to {pre.image_size} px but the model's input "
                              f"is {config.image_size} px")
    return Sam2Read(family, config, params, pre, source)


def read_sam2_hf(path: str | Path, *, allow_pickle: bool = False) -> Sam2Read:
    """An HF SAM2 directory (or one .safetensors file next to its config.json) -> `Sam2Read`."""
    with HFCheckpoint(path, allow_pickle=allow_pickle) as ck:
        hf_config = ck.config()
        family = family_of_hf(hf_config, f"{str(ck.path)!r} config.json")
        state = {n: ck.get(n) for n in ck.names}
        source = ck.source_info()
        directory = ck.path if ck.path.is_dir() else ck.path.parent
    pre, provenance = hf_dir_preprocessing(directory, family, config_from_hf(family, hf_config).image_size)
    return sam2_from_hf_state(hf_config, state, where=repr(str(path)), source={**source, **provenance},
                              preprocessing=pre, family=family)


def _cast(flat: dict[str, np.ndarray], dtype: str | None) -> dict[str, np.ndarray]:
    from converters.qwen_vl_io import parse_dtype

    np_dtype = parse_dtype(dtype)
    return flat if np_dtype is None else {k: v.astype(np_dtype) for k, v in flat.items()}


def import_sam2(path: str | Path, out: str | Path, *, dtype: str | None = None, allow_pickle: bool = False,
                overwrite: bool = False, progress: bool = True, meta_pt: bool = False,
                hiera_size: str | None = None) -> Path:
    """HF SAM2 directory (or, with `meta_pt`, Meta's original `sam2.1_hiera_*.pt`) -> stvl-jax checkpoint."""
    from stvl_jax.models.sam2.loading import save_model

    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"output {str(out)!r} already exists (pass --overwrite)")
    if meta_pt:
        from converters.sam2_meta import read_meta_pt

        read = read_meta_pt(path, hiera_size=hiera_size)
    else:
        read = read_sam2_hf(path, allow_pickle=allow_pickle)
    if progress:
        print(f"writing Orbax checkpoint {str(out)!r} ({read.family}, {len(read.params)} arrays)", file=sys.stderr,
              flush=True)
    return save_model(_cast(read.params, dtype), read.config, out, family=read.family, source=read.source,
                      preprocessing=read.preprocessing, overwrite=overwrite)


# ------------------------------------------------------------------------------------------ export
def hf_config_for_export(family: str, config, source: Mapping[str, Any], torch_dtype: str) -> dict[str, Any]:
    """The config.json to write: the imported one when it still describes `config`, else a fresh one."""
    stored = source.get("hf_config") if isinstance(source, Mapping) else None
    out = None
    if isinstance(stored, Mapping) and stored.get("model_type") == family:
        try:
            if config_from_hf(family, stored) == config:
                out = copy.deepcopy(dict(stored))
        except CheckpointError:
            pass
    if out is None:
        out = config_to_hf(family, config)
    out.pop("torch_dtype", None)  # transformers 5 writes `dtype`
    out["dtype"] = torch_dtype
    return out


def export_sam2(ckpt: str | Path, out: str | Path, *, dtype: str | None = None, max_shard_size: str | int = "5GB",
                overwrite: bool = False, progress: bool = True, verify: bool = True,
                allow_non_finite: bool = False) -> dict[str, str]:
    """stvl-jax SAM2 checkpoint -> HF directory that `Sam2Model` / `Sam2VideoModel.from_pretrained` loads;
    returns the weight map {HF name: file}. A failed export removes what it wrote."""
    from converters.qwen_vl_io import parse_dtype
    from converters.safetensors_io import parse_size, plan_shards, write_shards
    from stvl_jax import checkpoint_integrity, checkpoint_io
    from stvl_jax.models.sam2.loading import check_params, param_specs, read_info, read_preprocessing

    np_dtype = parse_dtype(dtype)
    max_bytes = parse_size(max_shard_size)
    family, config, info = read_info(ckpt)
    stored = checkpoint_io.param_metadata(ckpt)
    check_params(stored, param_specs(family, config), f"checkpoint {str(ckpt)!r}")
    pre = read_preprocessing(info, f"{ckpt}/{checkpoint_io.CONFIG_FILE}")
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"output {str(out)!r} already exists (pass --overwrite)")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    try:
        for old in (*out.glob("*.safetensors"), out / "model.safetensors.index.json"):
            old.unlink(missing_ok=True)  # --overwrite: no stale shard may survive next to the new index
        flat = checkpoint_io.restore_params(ckpt, {k: None for k in stored}, verify=verify)
        hf = flat_to_hf(family, config, flat)
        if np_dtype is not None:
            hf = {k: v.astype(np_dtype) for k, v in hf.items()}
        specs = [(n, shape, hf[n].dtype) for n, shape in hf_names(family, config)]
        tensors = ((n, hf[n]) for n, _, _ in specs)
        if not allow_non_finite:
            tensors = checkpoint_integrity.require_finite(tensors, f"checkpoint {str(ckpt)!r}")
        weight_map = write_shards(out, plan_shards(specs, max_bytes), tensors, metadata={"format": "pt"})
        source = info.get("source") if isinstance(info.get("source"), Mapping) else {}
        nominal = checkpoint_io.dominant_dtype((s, d) for _, s, d in specs)
        (out / "config.json").write_text(json.dumps(hf_config_for_export(family, config, source, str(nominal)),
                                                    indent=2, sort_keys=True) + "\n")
        for name, data in processor_files(pre, family, source.get("processor_files")).items():
            (out / name).write_text(json.dumps(data, indent=2) + "\n")
        if progress:
            print(f"wrote {len(specs)} tensors", file=sys.stderr, flush=True)
        return weight_map
    except BaseException:
        for p in set(out.iterdir()) - before:
            p.unlink(missing_ok=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
