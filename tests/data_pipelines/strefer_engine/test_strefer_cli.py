"""`stvl data strefer`: flags + YAML -> EngineConfig (unknown keys refused), Beam options passed through, the
counters printed, bad input as one line."""

import json
import os

import pytest


def _args(argv):
    from stvl_jax.data_cli import build_parser

    args, extra = build_parser().parse_known_args(["strefer", *argv])
    return args, extra


def test_flags_and_yaml_make_the_config(tmp_path):
    from data_pipelines.strefer.cli import beam_args, engine_config

    y = tmp_path / "e.yaml"
    y.write_text("segment_seconds: 4\nannotator: {name: openai, url: 'http://h:8000/v1', model: m}\n")
    args, extra = _args(["--videos", "v", "--out", "o", "--config", str(y), "--direct_num_workers=2",
                         "--temp_location", "gs://b/tmp"])
    cfg = engine_config(args)
    assert cfg.segment_seconds == 4 and cfg.annotator.name == "openai" and cfg.masklets == "generator"
    assert beam_args(extra) == ["--direct_num_workers=2", "--temp_location", "gs://b/tmp"]
    args, _ = _args(["--videos", "v", "--out", "o", "--annotator", "openai", "--url", "http://h/v1", "--model", "m"])
    cfg = engine_config(args)
    assert cfg.annotator.url == "http://h/v1" and cfg.masklets == "generator"  # a model annotator has no GT


def test_unknown_yaml_key_and_stray_argument_refused(tmp_path):
    from data_pipelines.strefer.cli import beam_args, engine_config
    from stvl_jax.errors import ConfigError, InputError

    y = tmp_path / "e.yaml"
    y.write_text("segment_secs: 4\n")
    args, _ = _args(["--videos", "v", "--out", "o", "--config", str(y)])
    with pytest.raises(ConfigError, match="segment_secs"):
        engine_config(args)
    with pytest.raises(InputError, match="stray"):
        beam_args(["--direct_num_workers=2", "stray"])


def test_cli_runs_and_prints_counters(strefer_set, tmp_path, capsys):
    from stvl_jax.cli import main

    out = tmp_path / "out"
    rc = main(["data", "strefer", "--videos", os.path.join(strefer_set, "videos"), "--out", str(out),
               "--plot", str(tmp_path / "f.png"), "--direct_num_workers=1"])
    text = capsys.readouterr().out
    assert rc == 0 and "strefer counters:" in text and "family_timestamp_yesno" in text
    summary = json.loads([line for line in text.splitlines() if line.startswith("{")][0])
    assert summary["examples"] == 14 and summary["dead_letters"] == 0 and os.path.isfile(tmp_path / "f.png")
    rc = main(["data", "strefer", "--videos", str(tmp_path / "missing"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "not a directory" in err


def test_synth_multishot_flag(tmp_path, capsys):
    from stvl_jax.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--videos", "2", "--workers", "1",
                 "--multishot", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ann = json.load(open(tmp_path / "s" / "annotations" / f"{out['multishot']}.json"))
    first = json.load(open(tmp_path / "s" / "annotations" / "synth_00000.json"))
    assert ann["cuts"] == [first["num_frames"]]
    assert os.path.isfile(tmp_path / "s" / "videos" / f"{out['multishot']}.mp4")
    assert main(["data", "synth", "--out", str(tmp_path / "t"), "--videos", "2", "--multishot", "3"]) == 2
    assert "--multishot 3" in capsys.readouterr().err
