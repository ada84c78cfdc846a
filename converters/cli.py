"""`stvl convert {import,export,verify,inspect}`: HF <-> stvl-jax checkpoints. See docs/conversion.md.

    stvl convert import  --hf DIR --out CKPT [--dtype keep|bf16|fp32|fp16] [--allow-pickle] [--overwrite]
    stvl convert import  --hf sam2.1_hiera_t.pt --meta-pt [--hiera-size tiny|small|base_plus|large] --out CKPT
    stvl convert export  --ckpt CKPT --out DIR [--dtype ...] [--max-shard-size 5GB] [--names auto|module|legacy]
                         [--allow-non-finite] [--no-verify] [--lora-adapter-dir DIR]
    stvl convert verify  --hf DIR --ckpt CKPT [--atol 1e-3] [--max-kl 1e-5] [--no-track (SAM2 video)]
    stvl convert inspect PATH [--flat] [--allow-pickle]

SAM2 (config.json model_type `sam2` / `sam2_video`, stvl_config.json format `stvl-jax/sam2`) goes to
`converters.sam2_convert` / `sam2_verify`; everything else to the Qwen-VL converters.
User errors (`CheckpointError`) propagate to `stvl_jax.cli`, which prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse

from converters.qwen_vl_io import DTYPE_NAMES
from converters.verify import DEFAULT_ATOL, DEFAULT_MAX_KL
from stvl_jax.cli_args import non_negative_float

_DTYPES = ["keep", *DTYPE_NAMES]


def _output_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", required=True, help=f"{what} directory to create")
    p.add_argument("--dtype", choices=_DTYPES, default="keep", help="tensor dtype (default: as stored)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stvl convert", description="Convert Qwen-VL and SAM2 checkpoints between "
                                "Hugging Face (safetensors) and stvl-jax (Orbax).")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{import,export,verify,inspect}")

    imp = sub.add_parser("import", help="HF directory -> stvl-jax checkpoint")
    imp.add_argument("--hf", required=True, help="HF model directory (config.json + safetensors)")
    _output_options(imp, "stvl-jax checkpoint")
    imp.add_argument("--allow-pickle", action="store_true",
                     help="accept .bin/.pt weights, loaded with torch.load(weights_only=True)")
    imp.add_argument("--meta-pt", action="store_true",
                     help="--hf is Meta's original SAM2.1 checkpoint (sam2.1_hiera_*.pt, a dict with 'model'), "
                          "loaded with torch.load(weights_only=True)")
    imp.add_argument("--hiera-size", choices=["tiny", "small", "base_plus", "large"], default=None,
                     help="with --meta-pt: the Hiera size (default: inferred from the tensor shapes)")

    exp = sub.add_parser("export", help="stvl-jax checkpoint -> HF directory (from_pretrained loads it)")
    exp.add_argument("--ckpt", required=True, help="stvl-jax checkpoint directory")
    _output_options(exp, "HF")
    exp.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (e.g. 5GB, 500MB)")
    exp.add_argument("--names", choices=["auto", "module", "legacy"], default="auto",
                     help="HF tensor names: auto = what transformers' save_pretrained writes (Qwen2.5-VL: the "
                          "hub's visual.*/model.*; Qwen3-VL: model.visual.*/model.language_model.*), module = "
                          "transformers-5 module names, legacy = visual.*/model.* (Qwen2.5-VL only)")
    exp.add_argument("--legacy-names", dest="names", action="store_const", const="legacy",
                     help="same as --names legacy")
    exp.add_argument("--allow-non-finite", action="store_true",
                     help="export tensors holding NaN/inf (refused by default: one line names the tensor)")
    exp.add_argument("--no-verify", dest="verify", action="store_false",
                     help="do not check the arrays against the checksums recorded in the checkpoint")
    exp.add_argument("--lora-adapter-dir", default=None, metavar="DIR",
                     help="a LoRA-trained checkpoint: write the base weights unmerged to --out and the adapters "
                          "as a PEFT adapter directory DIR (default: merge them into the base weights)")

    ver = sub.add_parser("verify", help="compare HF and stvl-jax logits on a synthetic sample (needs torch)")
    ver.add_argument("--hf", required=True, help="HF model directory")
    ver.add_argument("--ckpt", required=True, help="stvl-jax checkpoint directory")
    ver.add_argument("--atol", type=non_negative_float, default=DEFAULT_ATOL, help="max allowed |Δlogit| (fp32)")
    ver.add_argument("--max-kl", type=non_negative_float, default=DEFAULT_MAX_KL,
                     help="max allowed per-token KL(HF‖ours)")
    ver.add_argument("--seed", type=int, default=0, help="seed of the synthetic sample")
    ver.add_argument("--no-track", dest="track", action="store_false",
                     help="SAM2 video checkpoints: compare the image path only, not the 8-frame tracking clip")

    ins = sub.add_parser("inspect", help="tree of tensor names/shapes/dtypes (HF dir/file or stvl-jax ckpt)")
    ins.add_argument("path")
    ins.add_argument("--flat", action="store_true", help="one line per tensor (no layer collapsing)")
    ins.add_argument("--allow-pickle", action="store_true", help="read .bin/.pt with torch.load(weights_only=True)")
    return p


def _sam2_main(args) -> int | None:
    """Run the SAM2 converters when the inputs are SAM2's (None otherwise: the Qwen-VL path runs)."""
    from pathlib import Path

    from stvl_jax.errors import CheckpointError
    from stvl_jax.models.sam2.loading import is_sam2

    if args.cmd == "import":
        hf = Path(args.hf)
        if args.meta_pt or args.hiera_size:
            if not args.meta_pt:
                raise CheckpointError("--hiera-size applies to Meta checkpoints only: add --meta-pt")
        elif hf.is_file() and hf.suffix in (".pt", ".pth") and not args.allow_pickle:
            raise CheckpointError(f"{str(hf)!r} is a PyTorch pickle, refused by default; if it is Meta's SAM2 "
                                  f"checkpoint (sam2.1_hiera_*.pt), import it with --meta-pt")
        elif not is_sam2(hf):
            return None
        from converters.sam2_convert import import_sam2

        out = import_sam2(args.hf, args.out, dtype=args.dtype, allow_pickle=args.allow_pickle, overwrite=args.overwrite,
                          progress=not args.quiet, meta_pt=args.meta_pt, hiera_size=args.hiera_size)
        print(f"imported {args.hf} -> {out}")
    elif args.cmd == "export":
        if not is_sam2(args.ckpt):
            return None
        if args.lora_adapter_dir:
            raise CheckpointError(f"--lora-adapter-dir: {args.ckpt!r} is a SAM2 checkpoint; LoRA export applies to "
                                  f"Qwen-VL checkpoints")
        from converters.sam2_convert import export_sam2

        weight_map = export_sam2(args.ckpt, args.out, dtype=args.dtype, max_shard_size=args.max_shard_size,
                                 overwrite=args.overwrite, progress=not args.quiet, verify=args.verify,
                                 allow_non_finite=args.allow_non_finite)
        print(f"exported {args.ckpt} -> {args.out} ({len(weight_map)} tensors in "
              f"{len(set(weight_map.values()))} file(s))")
    elif args.cmd == "verify":
        if not (is_sam2(args.ckpt) or is_sam2(args.hf)):
            return None
        from converters.sam2_verify import verify_sam2

        report = verify_sam2(args.hf, args.ckpt, seed=args.seed, track=args.track)
        ok = report.ok(args.atol)
        print(f"{report.describe()}   (limit {args.atol:.1e})   {'OK' if ok else 'FAIL'}")
        return 0 if ok else 1
    else:
        return None
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    sam2 = _sam2_main(args)
    if sam2 is not None:
        return sam2
    if args.cmd == "import":
        from converters.qwen_vl_io import import_hf

        out = import_hf(args.hf, args.out, dtype=args.dtype, allow_pickle=args.allow_pickle,
                        overwrite=args.overwrite, progress=not args.quiet)
        print(f"imported {args.hf} -> {out}")
    elif args.cmd == "export":
        from converters.qwen_vl_io import export_hf

        weight_map = export_hf(args.ckpt, args.out, dtype=args.dtype, max_shard_size=args.max_shard_size,
                               names=args.names, overwrite=args.overwrite, progress=not args.quiet,
                               verify=args.verify, allow_non_finite=args.allow_non_finite,
                               lora_adapter_dir=args.lora_adapter_dir)
        files = sorted(set(weight_map.values()))
        print(f"exported {args.ckpt} -> {args.out} ({len(weight_map)} tensors in {len(files)} file(s))"
              + (f"; LoRA adapter -> {args.lora_adapter_dir}" if args.lora_adapter_dir else ""))
    elif args.cmd == "verify":
        from converters.verify import verify

        report = verify(args.hf, args.ckpt, seed=args.seed)
        ok = report.ok(args.atol, args.max_kl)
        print(f"max |Δlogit| {report.max_abs_diff:.3e} (limit {args.atol:.1e})   KL(HF‖ours) mean "
              f"{report.mean_kl:.3e} max {report.max_kl:.3e} (limit {args.max_kl:.1e})   over {report.tokens} "
              f"tokens   {'OK' if ok else 'FAIL'}")
        return 0 if ok else 1
    else:
        from converters.inspect_tree import inspect

        print(inspect(args.path, flat=args.flat, allow_pickle=args.allow_pickle))
    return 0
