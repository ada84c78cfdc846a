"""`stvl` command line: one dispatcher, each subcommand family owns its own argument parser.

    stvl demo                      the main job on the embedded default (synthetic videos, tiny models)
    stvl convert {import,export,verify,inspect} ...
    stvl data {synth,streamo,stride,qvh-yesno,...} ...
    stvl train CONFIG [key=value ...]
    stvl eval ... | stvl stream ... | stvl segment ... | stvl bench ...
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking argv list, one-line help)
_COMMANDS = {
    "demo": ("stvl_jax.demo", "main", "run the main job end to end on the embedded default"),
    "convert": ("converters.cli", "main", "import/export/verify/inspect HF <-> Orbax checkpoints"),
    "data": ("stvl_jax.data_cli", "main", "make the synthetic set and convert annotation formats"),
    "train": ("stvl_jax.train.cli", "main", "train from a typed YAML config"),
    "eval": ("stvl_jax.eval.cli", "main", "sharded evaluation"),
    "stream": ("stvl_jax.infer.cli", "main", "proactive streaming inference on a video"),
    "segment": ("stvl_jax.infer.segment_cli", "main",
                "promptable video segmentation with SAM2, or what a --query names with VIRST"),
    "bench": ("stvl_jax.bench", "main", "run a benchmark script"),
}


def _usage() -> str:
    lines = ["usage: stvl COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, _, help_) in _COMMANDS.items()]
    lines += ["", "Run `stvl COMMAND --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from stvl_jax import __version__

        print(f"stvl-jax {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in _COMMANDS:
        print(f"stvl: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = _COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(f"stvl {name}: not available in this build ({module_name} is missing)", file=sys.stderr)
            return 2
        raise
    from stvl_jax.errors import UserError

    try:
        return int(getattr(module, func_name)(rest) or 0)
    except UserError as e:
        print(f"stvl {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
