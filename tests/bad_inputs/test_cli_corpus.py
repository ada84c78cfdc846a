"""The bad-input corpus: every `stvl` subcommand, fed inputs a user really gets wrong, answers with one clear
line (naming the input and the reason) and a nonzero exit — never a traceback.

It grows with the CLI: `test_every_subcommand_has_a_case` lists the subcommands from the parsers' own `--help`
and fails for one without a case here. Counted skips of partly bad inputs are tested by each command's own tests
(tests/train/test_skip_report.py, tests/eval/test_eval_skips.py, tests/data_pipelines/test_cli.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass

import pytest
from video_files import write_video

from stvl_jax.cli import _COMMANDS, main


@dataclass(frozen=True)
class Case:
    """argv with {placeholders} from the corpus; `expect`: substrings of the error line (the input and the reason)."""
    name: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import fractions

    d = tmp_path_factory.mktemp("corpus")
    p = {k: str(d / k) for k in ("missing", "dir")}
    os.makedirs(p["dir"])
    good = write_video(str(d / "good.mp4"), "mpeg4", fractions.Fraction(4), 12)
    data = open(good, "rb").read()
    files = {
        "truncated.mp4": data[: len(data) // 3], "zero.mp4": b"", "text.mp4": b"this is not a video\n" * 20,
        "bad.json": b"{\"video\": ", "list.jsonl": b"[1, 2]\n", "garbage.jsonl": b"not json at all\n",
        "bad_yaml.yaml": b"steps: [1, 2\n", "unknown_key.yaml": b"name: x\nsteps: 2\nstepz: 3\n",
        "not_a_checkpoint.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}",
        "predictions.json": b"{not json", "index.jsonl": b'{"video": "good.mp4", "messages": []}\n',
        "sam2.1_hiera_tiny.pt": b"PK\x03\x04 not really a torch zip archive",
    }
    for name, content in files.items():
        p[name] = str(d / name)
        open(p[name], "wb").write(content)
    p["fifo"] = str(d / "fifo.mp4")
    os.mkfifo(p["fifo"])
    # an HF directory whose config names a model type nobody converts
    p["hf_unknown"] = str(d / "hf_unknown")
    os.makedirs(p["hf_unknown"])
    json.dump({"model_type": "bert"}, open(os.path.join(p["hf_unknown"], "config.json"), "w"))
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"embeddings.weight": np.zeros((4, 2), np.float32)}, os.path.join(p["hf_unknown"], "model.safetensors"))
    # an HF SAM2 directory whose weights are not SAM2's
    p["hf_sam2_wrong"] = str(d / "hf_sam2_wrong")
    os.makedirs(p["hf_sam2_wrong"])
    json.dump({"model_type": "sam2"}, open(os.path.join(p["hf_sam2_wrong"], "config.json"), "w"))
    save_file({"embeddings.weight": np.zeros((4, 2), np.float32)},
              os.path.join(p["hf_sam2_wrong"], "model.safetensors"))
    # a checkpoint directory with its arrays gone
    p["ckpt_empty"] = str(d / "ckpt_empty")
    os.makedirs(p["ckpt_empty"])
    # checkpoint directories of the wrong family for `stvl segment` (only their stvl_config.json is read)
    for name, fmt in (("ckpt_sam2_stub", "stvl-jax/sam2"), ("ckpt_virst_stub", "stvl-jax/virst")):
        p[name] = str(d / name)
        os.makedirs(p[name])
        json.dump({"format": fmt}, open(os.path.join(p[name], "stvl_config.json"), "w"))
    p["good"] = good
    yield p
    shutil.rmtree(d, ignore_errors=True)


CASES = [
    # convert
    Case("convert import: missing HF dir", ("convert", "import", "--hf", "{missing}", "--out", "{out}"),
         ("{missing}",)),
    Case("convert import: unknown model_type", ("convert", "import", "--hf", "{hf_unknown}", "--out", "{out}"),
         ("bert",)),
    Case("convert import: .pt without --meta-pt", ("convert", "import", "--hf", "{sam2.1_hiera_tiny.pt}", "--out",
                                                  "{out}"), ("sam2.1_hiera_tiny.pt", "--meta-pt")),
    Case("convert import: --meta-pt on a file that is no torch checkpoint",
         ("convert", "import", "--hf", "{sam2.1_hiera_tiny.pt}", "--meta-pt", "--out", "{out}"),
         ("sam2.1_hiera_tiny.pt", "weights_only=True")),
    Case("convert import: --meta-pt on a directory", ("convert", "import", "--hf", "{dir}", "--meta-pt", "--out",
                                                      "{out}"), ("{dir}", "not a file")),
    Case("convert import: --hiera-size without --meta-pt",
         ("convert", "import", "--hf", "{hf_sam2_wrong}", "--hiera-size", "tiny", "--out", "{out}"), ("--meta-pt",)),
    Case("convert import: SAM2 config, other weights", ("convert", "import", "--hf", "{hf_sam2_wrong}", "--out",
                                                        "{out}"), ("SAM2", "lacks")),
    Case("convert export: missing checkpoint", ("convert", "export", "--ckpt", "{missing}", "--out", "{out}"),
         ("{missing}",)),
    Case("convert export: empty checkpoint dir", ("convert", "export", "--ckpt", "{ckpt_empty}", "--out", "{out}"),
         ("{ckpt_empty}",)),
    Case("convert verify: SAM2 directory, missing checkpoint",
         ("convert", "verify", "--hf", "{hf_sam2_wrong}", "--ckpt", "{missing}"), ("{missing}",)),
    Case("convert verify: missing dirs", ("convert", "verify", "--hf", "{missing}", "--ckpt", "{missing}"),
         ("{missing}",)),
    Case("convert inspect: missing path", ("convert", "inspect", "{missing}"), ("{missing}",)),
    Case("convert inspect: corrupt safetensors", ("convert", "inspect", "{not_a_checkpoint.safetensors}"),
         ("not_a_checkpoint.safetensors",)),
    # data
    Case("data synth: --out is a file", ("data", "synth", "--out", "{good}", "--videos", "1"), ("good.mp4",)),
    Case("data tokenizer: --out is a file", ("data", "tokenizer", "--out", "{good}"), ("good.mp4",)),
    Case("data strefer: missing videos folder", ("data", "strefer", "--videos", "{missing}", "--out", "{out}"),
         ("{missing}", "not a directory")),
    Case("data strefer: no video in the folder", ("data", "strefer", "--videos", "{dir}", "--out", "{out}"),
         ("{dir}", "no video files")),
    Case("data strefer: unknown config key", ("data", "strefer", "--videos", "{dir}", "--out", "{out}", "--config",
                                              "{unknown_key.yaml}"), ("unknown_key.yaml", "stepz")),
    Case("data strefer: stray argument", ("data", "strefer", "--videos", "{dir}", "--out", "{out}", "stray"),
         ("stray",)),
    Case("data streamo: missing input", ("data", "streamo", "--input", "{missing}", "--out", "{out}"),
         ("{missing}",)),
    Case("data streamo: not JSON", ("data", "streamo", "--input", "{bad.json}", "--out", "{out}"),
         ("bad.json",)),
    Case("data stride: missing input", ("data", "stride", "--input", "{missing}", "--out", "{out}"), ("{missing}",)),
    Case("data qvh-yesno: missing input", ("data", "qvh-yesno", "--input", "{missing}", "--out", "{out}"),
         ("{missing}",)),
    Case("data qvh-yesno-score: missing samples",
         ("data", "qvh-yesno-score", "--samples", "{missing}", "--predictions", "{missing}"), ("{missing}",)),
    Case("data inspect: directory", ("data", "inspect", "{dir}"), ("{dir}", "not a regular file")),
    Case("data inspect: FIFO", ("data", "inspect", "{fifo}"), ("fifo.mp4", "not a regular file")),
    Case("data inspect: empty file", ("data", "inspect", "{zero.mp4}"), ("zero.mp4", "0 bytes")),
    Case("data inspect: text named .mp4", ("data", "inspect", "{text.mp4}"), ("text.mp4",)),
    Case("data to-arrayrecord: missing input", ("data", "to-arrayrecord", "--input", "{missing}", "--out", "{out}"),
         ("{missing}",)),
    # train
    Case("train: missing config", ("train", "{missing}"), ("{missing}",)),
    Case("train: YAML syntax error", ("train", "{bad_yaml.yaml}"), ("bad_yaml.yaml",)),
    Case("train: unknown key", ("train", "{unknown_key.yaml}"), ("stepz",)),
    Case("train: override of the wrong type", ("train", "qwen3vl_tiny_synthetic", "steps=many"), ("steps",)),
    Case("train: missing tokenizer dir",
         ("train", "qwen3vl_tiny_captions", "data.pipeline.index={index.jsonl}", "data.pipeline.tokenizer={missing}",
          "data.batch_size=8", "out_dir={out}"), ("data.pipeline.tokenizer", "{missing}", "not found")),
    Case("train: tokenizer dir without a tokenizer",
         ("train", "qwen3vl_tiny_captions", "data.pipeline.index={index.jsonl}", "data.pipeline.tokenizer={dir}",
          "data.batch_size=8", "out_dir={out}"), ("data.pipeline.tokenizer", "{dir}", "not a tokenizer directory")),
    # eval
    Case("eval streamo: missing checkpoint",
         ("eval", "streamo", "--ckpt", "{missing}", "--data", "{missing}", "--out", "{out}"), ("{missing}",)),
    Case("eval qvh-yesno: missing checkpoint",
         ("eval", "qvh-yesno", "--ckpt", "{missing}", "--data", "{missing}", "--out", "{out}"), ("{missing}",)),
    Case("eval stride: missing checkpoint",
         ("eval", "stride", "--ckpt", "{missing}", "--data", "{missing}", "--out", "{out}"), ("{missing}",)),
    Case("eval streamo: --mesh not three integers",
         ("eval", "streamo", "--ckpt", "{missing}", "--data", "{missing}", "--out", "{out}", "--mesh", "1,a,1"),
         ("--mesh", "three integers", "'1,a,1'")),
    Case("eval strefer: --mesh with two -1",
         ("eval", "strefer", "--ckpt", "{missing}", "--data", "{missing}", "--out", "{out}", "--mesh=-1,2,-1"),
         ("--mesh", "three integers", "'-1,2,-1'")),
    Case("eval etbench: missing checkpoint",
         ("eval", "etbench", "--ckpt", "{missing}", "--anno", "{missing}", "--videos", "{dir}", "--out", "{out}"),
         ("{missing}",)),
    Case("eval etbench-score: not JSON", ("eval", "etbench-score", "{predictions.json}"),
         ("predictions.json",)),
    Case("eval vos: not a synthetic set", ("eval", "vos", "--ckpt", "{missing}", "--data", "{dir}", "--out",
                                           "{out}"), ("manifest.json", "not a synthetic set manifest")),
    Case("eval rvos: no MeViS layout there", ("eval", "rvos", "--ckpt", "{missing}", "--data", "{dir}", "--format",
                                              "mevis", "--out", "{out}"), ("meta_expressions.json", "not found")),
    # stream
    Case("stream: directory", ("stream", "{dir}", "--query", "q", "--ckpt", "{missing}"), ("{dir}", "not a regular")),
    Case("stream: FIFO", ("stream", "{fifo}", "--query", "q", "--ckpt", "{missing}"), ("fifo.mp4", "not a regular")),
    Case("stream: missing video", ("stream", "{missing}", "--query", "q", "--ckpt", "{missing}"),
         ("{missing}", "not found")),
    Case("stream: empty video", ("stream", "{zero.mp4}", "--query", "q", "--ckpt", "{missing}"),
         ("zero.mp4", "0 bytes")),
    Case("stream: missing checkpoint", ("stream", "{good}", "--query", "q", "--ckpt", "{missing}"), ("{missing}",)),
    # segment
    Case("segment: missing video", ("segment", "{missing}", "--ckpt", "{missing}", "--box", "1,1,5,5", "--out",
                                    "{out}"), ("{missing}", "not found")),
    Case("segment: directory", ("segment", "{dir}", "--ckpt", "{missing}", "--box", "1,1,5,5", "--out", "{out}"),
         ("{dir}", "not a regular file")),
    Case("segment: no prompt", ("segment", "{good}", "--ckpt", "{missing}", "--out", "{out}"), ("no prompt",)),
    Case("segment: inverted box", ("segment", "{good}", "--ckpt", "{missing}", "--box", "20,10,5,30", "--out",
                                   "{out}"), ("--box 20,10,5,30", "inverted")),
    Case("segment: box outside the frame", ("segment", "{good}", "--ckpt", "{missing}", "--box", "1,1,70,20",
                                            "--out", "{out}"), ("outside the 64x48 frame",)),
    Case("segment: frame past the end", ("segment", "{good}", "--ckpt", "{missing}", "--frame", "12", "--point",
                                         "5,5", "--out", "{out}"), ("frame 12 is past the end",)),
    Case("segment: malformed point", ("segment", "{good}", "--ckpt", "{missing}", "--point", "5", "--out",
                                      "{out}"), ("--point", "2 comma-separated numbers")),
    Case("segment: not a SAM2 checkpoint", ("segment", "{good}", "--ckpt", "{ckpt_empty}", "--box", "1,1,5,5",
                                            "--out", "{out}"), ("{ckpt_empty}",)),
    Case("segment: --query with a SAM2 checkpoint", ("segment", "{good}", "--ckpt", "{ckpt_sam2_stub}", "--query",
                                                     "the red circle", "--out", "{out}"),
         ("--query", "{ckpt_sam2_stub}", "sam2 checkpoint, not VIRST")),
    Case("segment: --query with an empty checkpoint dir", ("segment", "{good}", "--ckpt", "{ckpt_empty}", "--query",
                                                           "the red circle", "--out", "{out}"),
         ("{ckpt_empty}", "not an stvl-jax checkpoint")),
    Case("segment: --box with a VIRST checkpoint", ("segment", "{good}", "--ckpt", "{ckpt_virst_stub}", "--box",
                                                    "1,1,5,5", "--out", "{out}"), ("{ckpt_virst_stub}", "--query")),
    Case("segment: --query and --box", ("segment", "{good}", "--ckpt", "{ckpt_virst_stub}", "--query", "the circle",
                                        "--box", "1,1,5,5", "--out", "{out}"), ("--box 1,1,5,5", "not both")),
    Case("segment: empty --query", ("segment", "{good}", "--ckpt", "{ckpt_virst_stub}", "--query", " ", "--out",
                                    "{out}"), ("--query is empty",)),
    # bench
    Case("bench: unknown benchmark", ("bench", "no_such_benchmark"), ("no_such_benchmark",)),
    # demo
    Case("demo: --out is a file", ("demo", "--out", "{good}", "--skip-parity"), ("good.mp4",)),
]


def _fill(s: str, corpus: dict) -> str:
    return re.sub(r"\{([^{}]+)\}", lambda m: corpus[m.group(1)], s)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_clear_line(case, corpus, capsys, tmp_path):
    corpus = {**corpus, "out": str(tmp_path / "out")}  # a fresh output path per case
    argv = [_fill(a, corpus) for a in case.argv]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse refused a value: usage + one `error:` line, exit 2
        rc = e.code
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc != 0, f"exit 0 on bad input: {text[-500:]}"
    assert "Traceback" not in text
    lines = [ln for ln in out.err.strip().splitlines() if ln.strip()]
    assert lines, "no error message"
    last = lines[-1].split("\r")[-1]  # after a progress bar's carriage returns
    assert last.startswith(f"stvl {argv[0]}: error:") or last.startswith(f"stvl {argv[0]}"), last
    for want in case.expect:
        assert _fill(want, corpus) in last, f"{want!r} not in {last!r}"


def _subcommands(command: str, capsys) -> list[str]:
    """The subcommands `stvl COMMAND --help` lists ({a,b,c} in its usage), or [COMMAND] when it has none."""
    try:
        main([command, "--help"])
    except SystemExit:
        pass
    usage = capsys.readouterr().out.split("\n\n")[0]
    m = re.search(r"\{([a-z0-9,-]+)\} \.\.\.", usage)
    return [f"{command} {s}" for s in m.group(1).split(",")] if m else [command]


def test_every_subcommand_has_a_case(capsys):
    covered = {" ".join(c.argv[:2]) for c in CASES} | {c.argv[0] for c in CASES}
    missing = [s for cmd in _COMMANDS for s in _subcommands(cmd, capsys) if s not in covered]
    assert not missing, f"subcommands without a bad-input case in {__file__}: {missing}"
