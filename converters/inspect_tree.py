"""`stvl convert inspect PATH`: the tree of tensor names, shapes and dtypes of an HF checkpoint or an stvl-jax
checkpoint, from headers / Orbax metadata only (no tensor is read).

Runs of numbered layers with the same shapes collapse to one line: `layers.[0-27]` (pass `flat=True` to list
every tensor). Example:

    model.language_model
      embed_tokens.weight                      (151936, 2048)   bfloat16
      layers.[0-27]
        input_layernorm.weight                 (2048,)          bfloat16
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

Spec = tuple[tuple[int, ...], np.dtype]


def read_specs(path: str | Path, *, allow_pickle: bool = False) -> tuple[str, dict[str, Spec], str]:
    """(kind, {name: (shape, dtype)}, separator) for an stvl-jax checkpoint or an HF directory / file."""
    path = Path(path)
    if path.is_dir() and (path / "stvl_config.json").exists():
        from stvl_jax import checkpoint_io
        from stvl_jax.models.sam2.loading import FORMAT as SAM2_FORMAT

        info = checkpoint_io.read_info(path, formats=(checkpoint_io.FORMAT, SAM2_FORMAT))
        family = f", {info['family']}" if info.get("format") == SAM2_FORMAT else ""
        return f"stvl-jax checkpoint (Orbax{family})", checkpoint_io.param_metadata(path), "/"
    from converters.hf_checkpoint import HFCheckpoint

    with HFCheckpoint(path, allow_pickle=allow_pickle) as ck:
        files = ck.weight_files
        kind = f"Hugging Face checkpoint ({len(files)} file{'s' * (len(files) > 1)}: {files[0].name}" + \
            (f" ... {files[-1].name})" if len(files) > 1 else ")")
        return kind, {n: ck.spec(n) for n in ck.names}, "."


def _collapse(specs: Mapping[str, Spec], sep: str) -> dict[str, Spec]:
    """Merge names that differ only in one numeric component into `a.[0-27].b` when all share shape and dtype."""
    groups: dict[tuple, list[tuple[int, str]]] = {}
    for name, spec in specs.items():
        parts = name.split(sep)
        nums = [i for i, p in enumerate(parts) if p.isdigit()]
        if not nums:
            groups.setdefault((name, None, spec), []).append((-1, name))
            continue
        i = nums[0]  # the layer index is the first numeric component
        pattern = sep.join(parts[:i] + ["#"] + parts[i + 1:])
        groups.setdefault((pattern, i, spec), []).append((int(parts[i]), name))
    out: dict[str, Spec] = {}
    for (pattern, _, spec), members in groups.items():
        idx = sorted(n for n, _ in members)
        if len(members) > 1 and idx == list(range(idx[0], idx[0] + len(idx))):
            out[pattern.replace("#", f"[{idx[0]}-{idx[-1]}]")] = spec
        else:
            out.update({name: spec for _, name in members})
    return out


def render(specs: Mapping[str, Spec], sep: str, *, flat: bool = False) -> list[str]:
    """Indented tree lines: inner nodes are name prefixes, leaves show shape and dtype."""
    items = dict(sorted((specs if flat else _collapse(specs, sep)).items(), key=lambda kv: _natural(kv[0])))
    tree: dict = {}
    for name, spec in items.items():
        node = tree
        parts = name.split(sep)
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = spec
    lines: list[str] = []

    def walk(node: dict, depth: int) -> None:
        for key, child in node.items():
            label = key
            while isinstance(child, dict) and len(child) == 1:  # join single-child chains: a.b.c
                (k2, c2), = child.items()
                label, child = f"{label}{sep}{k2}", c2
            pad = "  " * depth
            if isinstance(child, dict):
                lines.append(pad + label)
                walk(child, depth + 1)
            else:
                shape, dtype = child
                lines.append(f"{pad + label:<64} {str(tuple(shape)):<20} {np.dtype(dtype).name}")

    walk(tree, 0)
    return lines


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def summary(specs: Mapping[str, Spec]) -> str:
    by_dtype: dict[str, int] = {}
    nbytes = 0
    for shape, dtype in specs.values():
        n = int(np.prod(shape))
        by_dtype[np.dtype(dtype).name] = by_dtype.get(np.dtype(dtype).name, 0) + n
        nbytes += n * np.dtype(dtype).itemsize
    dtypes = ", ".join(f"{d}: {n:,}" for d, n in sorted(by_dtype.items()))
    return f"{len(specs)} tensors, {sum(by_dtype.values()):,} parameters ({dtypes}), {nbytes / 1e9:.3f} GB"


def inspect(path: str | Path, *, flat: bool = False, allow_pickle: bool = False) -> str:
    kind, specs, sep = read_specs(path, allow_pickle=allow_pickle)
    return "\n".join([f"{path}: {kind}", summary(specs), *render(specs, sep, flat=flat)])
