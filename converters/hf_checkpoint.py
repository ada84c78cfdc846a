"""Read a Hugging Face checkpoint directory tensor by tensor: config.json, generation_config.json and the weights.

Weights: `model.safetensors`, sharded `model-0000k-of-0000n.safetensors` + `model.safetensors.index.json`, any
other `*.safetensors` files, or a single .safetensors file. PyTorch pickles (`pytorch_model.bin[.index.json]`,
`*.bin`, `*.pt`, `*.pth`) are refused unless `allow_pickle=True`, and then loaded only with
`torch.load(weights_only=True, mmap=True)`, which refuses arbitrary objects (no code runs while loading).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from converters.safetensors_io import TensorInfo, read_header, read_tensor
from stvl_jax.errors import CheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")


class PickleRefused(CheckpointError):
    """The weights are PyTorch pickles and `allow_pickle` is off (`file`: the first of them)."""

    def __init__(self, message: str, file: Path):
        super().__init__(message)
        self.file = file


def _load_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(file)!r} is not valid JSON: {e}") from None


class HFCheckpoint:
    """An HF checkpoint opened for streaming. `names` lists every tensor; `spec(name)` -> (shape, dtype) from
    headers only; `get(name)` reads one tensor. Use as a context manager (closes file handles)."""

    def __init__(self, path: str | Path, *, allow_pickle: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"Hugging Face checkpoint {str(self.path)!r} does not exist")
        self._tensors: dict[str, TensorInfo] = {}
        self._pickled: dict[str, Any] = {}  # name -> torch.Tensor (mmapped)
        self._handles: dict[Path, Any] = {}
        self._index: tuple[Path, dict[str, str]] | None = None  # (index file, weight_map) when sharded
        self.weight_files = self._find_weights(allow_pickle)
        for file in self.weight_files:
            if file.suffix == ".safetensors":
                infos, _ = read_header(file)
                self._add(file, infos)
            else:
                self._add(file, _torch_load(file))
        if not self.names:
            raise CheckpointError(f"{str(self.path)!r} holds no tensors")

    # ---------------------------------------------------------------- discovery
    def _find_weights(self, allow_pickle: bool) -> list[Path]:
        p = self.path
        if p.is_file():
            files = [p]
        else:
            index = p / "model.safetensors.index.json"
            pickle_index = p / "pytorch_model.bin.index.json"
            if index.is_file():
                files = self._from_index(index)
            elif sorted(p.glob("*.safetensors")):
                files = sorted(p.glob("*.safetensors"))
            elif pickle_index.is_file():
                files = self._from_index(pickle_index)
            else:
                files = sorted(f for s in PICKLE_SUFFIXES for f in p.glob("*" + s))
            if not files:
                raise CheckpointError(f"{str(p)!r} holds no weights (no *.safetensors, no pytorch_model.bin)")
        pickles = [f for f in files if f.suffix != ".safetensors"]
        if pickles and not allow_pickle:
            raise PickleRefused(f"{str(pickles[0])!r} is a PyTorch pickle; unpickling can run arbitrary code, so "
                                f"it is refused. Convert it to safetensors, or pass --allow-pickle to load it "
                                f"with torch.load(weights_only=True)", pickles[0])
        bad = [f for f in files if f.suffix not in (".safetensors", *PICKLE_SUFFIXES)]
        if bad:
            raise CheckpointError(f"{str(bad[0])!r} is neither safetensors nor a PyTorch checkpoint")
        return files

    def _from_index(self, index: Path) -> list[Path]:
        data = _load_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{str(index)!r} has no 'weight_map'")
        files = sorted({self.path / f for f in weight_map.values()})
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{str(index)!r} names shard {f.name!r}, which is missing")
        self._index = (index, weight_map)
        return files

    def _add(self, file: Path, tensors: dict) -> None:
        for name, t in tensors.items():
            if name in self._tensors or name in self._pickled:
                raise CheckpointError(f"tensor {name!r} appears twice (second time in {str(file)!r})")
            if isinstance(t, TensorInfo):
                self._tensors[name] = t
            else:
                self._pickled[name] = t
        if self._index is not None:
            index_file, weight_map = self._index
            listed = {n for n, f in weight_map.items() if self.path / f == file}
            missing = sorted(listed - set(tensors))
            if missing:
                raise CheckpointError(f"{str(index_file)!r} lists {missing[:3]} in {file.name!r}, which lacks them")

    # ---------------------------------------------------------------- access
    @property
    def names(self) -> list[str]:
        return [*self._tensors, *self._pickled]

    def spec(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        if name in self._tensors:
            t = self._tensors[name]
            return t.shape, t.dtype
        t = self._pickled[name]
        return tuple(t.shape), _numpy_dtype(t.dtype)

    def tensor_info(self, name: str) -> TensorInfo:
        """Where a safetensors tensor's bytes are (file, offset, dtype, shape); pickled tensors have none."""
        return self._tensors[name]

    def get(self, name: str) -> np.ndarray:
        if name in self._pickled:
            return _to_numpy(self._pickled[name])
        info = self._tensors[name]
        if info.file not in self._handles:
            self._handles[info.file] = open(info.file, "rb")
        return read_tensor(info, self._handles[info.file])

    def config(self) -> dict[str, Any]:
        cfg = (self.path if self.path.is_dir() else self.path.parent) / "config.json"
        if not cfg.is_file():
            raise CheckpointError(f"{str(cfg)!r} does not exist (the model config is needed)")
        return _load_json(cfg)

    def generation_config(self) -> dict[str, Any] | None:
        gen = (self.path if self.path.is_dir() else self.path.parent) / "generation_config.json"
        return _load_json(gen) if gen.is_file() else None

    def source_info(self) -> dict[str, Any]:
        """Provenance recorded as `source` in stvl_config.json (by import; in `info` by the direct load)."""
        return {"kind": "huggingface", "path": str(self.path.absolute()), "hf_config": self.config(),
                "generation_config": self.generation_config()}

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------------------ torch pickles
def _torch_load(file: Path) -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"reading {str(file)!r} needs torch (pip install 'stvl-jax[torch]')") from None
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError for forbidden globals, RuntimeError for corrupt zips
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"torch.load(weights_only=True) refused {str(file)!r}: {first}") from None
    for wrapper in ("state_dict", "model_state_dict"):  # Lightning-style / VIRST's training checkpoints
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise CheckpointError(f"{str(file)!r} is not a state dict of named tensors")
    return obj


def _numpy_dtype(torch_dtype) -> np.dtype:
    import ml_dtypes
    import torch

    if torch_dtype == torch.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(torch.empty((), dtype=torch_dtype).numpy().dtype)


def _to_numpy(t) -> np.ndarray:
    import ml_dtypes
    import torch

    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bf16: reinterpret the bits
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()
