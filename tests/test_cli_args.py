"""Out-of-range numbers on the command line are refused at parse time, naming the flag (no traceback, no
silently wrong output such as `--fps 0` writing every Streamo time as 0)."""

import argparse

import pytest

from stvl_jax.cli import main as stvl
from stvl_jax.cli_args import non_negative_float, positive_float, positive_int, probability


def test_value_types():
    assert positive_int("3") == 3 and positive_float("0.5") == 0.5
    assert non_negative_float("0") == 0.0 and probability("1") == 1.0 and probability("0") == 0.0
    for fn, bad in [(positive_int, "0"), (positive_int, "-2"), (positive_int, "1.5"), (positive_int, "x"),
                    (positive_float, "0"), (positive_float, "inf"), (positive_float, "nan"),
                    (non_negative_float, "-0.1"), (probability, "1.01"), (probability, "-1")]:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            fn(bad)


@pytest.mark.parametrize("argv, flag", [
    (["data", "synth", "--out", "{tmp}/s", "--videos", "-3"], "--videos"),
    (["data", "synth", "--out", "{tmp}/s", "--workers", "0"], "--workers"),
    (["data", "streamo", "--input", "{tmp}/r.json", "--out", "{tmp}/s.jsonl", "--fps", "0"], "--fps"),
    (["data", "stride", "--input", "{tmp}/r.jsonl", "--out", "{tmp}/s.jsonl", "--window", "0"], "--window"),
    (["data", "stride", "--input", "{tmp}/r.jsonl", "--out", "{tmp}/s.jsonl", "--modes", "1", "4"], "--modes"),
    (["data", "qvh-yesno", "--input", "{tmp}/q.jsonl", "--out", "{tmp}/y.jsonl", "--margin", "-1"], "--margin"),
    (["demo", "--out", "{tmp}/demo", "--videos", "0"], "--videos"),
    (["demo", "--out", "{tmp}/demo", "--steps", "-5"], "--steps"),
    (["stream", "{tmp}/v.mp4", "--query", "q", "--ckpt", "{tmp}/c", "--confidence", "1.5"], "--confidence"),
    (["stream", "{tmp}/v.mp4", "--query", "q", "--ckpt", "{tmp}/c", "--fps", "nan"], "--fps"),
    (["eval", "streamo", "--ckpt", "{tmp}/c", "--data", "{tmp}/d", "--out", "{tmp}/o", "--limit", "0"], "--limit"),
    (["convert", "verify", "--hf", "{tmp}/h", "--ckpt", "{tmp}/c", "--atol", "-1"], "--atol"),
])
def test_bad_numbers_name_their_flag(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        stvl([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"argument {flag}" in err and "Traceback" not in err, err
    assert not any(tmp_path.iterdir()), "nothing is written before the arguments are checked"
