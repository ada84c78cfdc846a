"""Arguments of `stvl data strefer` (the command itself is wired in stvl_jax/data_cli.py, which also builds the
`stvl` annotator's model chat on the JAX side).

    stvl data strefer --videos DIR --out DIR [--config engine.yaml] [--annotator synthetic|stvl|openai]
        [--checkpoint CKPT] [--url URL --model NAME] [--masklets ground_truth|generator]
        [--runner DirectRunner|DataflowRunner|FlinkRunner|SparkRunner] [--overwrite] [--plot families.png]
        [any Beam pipeline option, e.g. --direct_num_workers=2 --direct_running_mode=multi_processing]
"""

from __future__ import annotations

import argparse

from data_pipelines.strefer.config import ANNOTATORS, MASKLET_SOURCES, EngineConfig
from data_pipelines.strefer.run import RUNNERS
from stvl_jax.errors import ConfigError, InputError


def add_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--videos", required=True, help="folder of videos (searched recursively)")
    s.add_argument("--out", required=True, help="TFDS data dir: writes OUT/strefer/<version>/ and dead_letter.jsonl")
    s.add_argument("--config", default=None, help="YAML of EngineConfig fields (docs/strefer.md)")
    s.add_argument("--annotator", choices=ANNOTATORS, default=None)
    s.add_argument("--checkpoint", default=None, help="stvl annotator: stvl checkpoint or HF directory")
    s.add_argument("--tokenizer", default=None, help="stvl annotator: tokenizer dir (default: the checkpoint)")
    s.add_argument("--url", default=None, help="openai annotator: base URL, e.g. http://localhost:8000/v1")
    s.add_argument("--model", default=None, help="openai annotator: model name")
    s.add_argument("--masklets", choices=MASKLET_SOURCES, default=None)
    s.add_argument("--runner", choices=RUNNERS, default="DirectRunner")
    s.add_argument("--dead-letter", default=None, help="dead-letter JSONL path (default OUT/dead_letter.jsonl)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing dataset of this version in OUT")
    s.add_argument("--plot", default=None, help="write a bar chart of the instruction families (PNG)")


def engine_config(args) -> EngineConfig:
    """YAML (if any) + the flags given -> EngineConfig (unknown YAML keys refused)."""
    d = {}
    if args.config:
        import yaml

        try:
            with open(args.config) as f:
                d = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"--config {args.config!r}: {e}".splitlines()[0]) from None
        if not isinstance(d, dict):
            raise ConfigError(f"--config {args.config!r}: expected a mapping of EngineConfig fields")
    ann = d.get("annotator", {})
    ann = {"name": ann} if isinstance(ann, str) else dict(ann)
    for key in ("checkpoint", "tokenizer", "url", "model"):
        if getattr(args, key) is not None:
            ann[key] = getattr(args, key)
    if args.annotator:
        ann["name"] = args.annotator
    d["annotator"] = ann
    if args.masklets:
        d["masklets"] = args.masklets
    elif ann.get("name", "synthetic") != "synthetic" and "masklets" not in d:
        d["masklets"] = "generator"  # a model annotator has no ground-truth masklets
    return EngineConfig.from_dict(d, source=args.config or "strefer flags")


def beam_args(extra: list[str]) -> list[str]:
    """Unparsed arguments go to Beam's PipelineOptions: options (--name=value, or --name value)."""
    bad = [a for i, a in enumerate(extra)
           if not a.startswith("--") and not (i > 0 and extra[i - 1].startswith("--") and "=" not in extra[i - 1])]
    if bad:
        raise InputError(f"stvl data strefer: unexpected argument(s) {bad} (Beam options are --name=value)")
    return list(extra)
