"""Strefer's `<k>` time tokens: k = round((N - 1) * sec / duration) by hand, and each `<k>` a single token of the
extended tokenizer that decodes back to itself (the fast piece encoder of the pipeline included)."""

import json

import pytest

from data_pipelines.strefer.instructions import time_token, token_time


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """(the tiny tokenizer, the tiny tokenizer + <0>..<31> as `stvl data tokenizer --time-tokens 32` writes it)."""
    from data_pipelines.tokenizer import open_tokenizer
    from stvl_jax.data_cli import main

    plain = str(tmp_path_factory.mktemp("tok"))
    ext = str(tmp_path_factory.mktemp("tok_time"))
    assert main(["tokenizer", "--out", plain]) == 0
    assert main(["tokenizer", "--out", ext, "--time-tokens", "32"]) == 0
    return open_tokenizer(plain), open_tokenizer(ext)


@pytest.mark.parametrize("sec,duration,n,k", [
    (0.0, 8.0, 32, 0),
    (8.0, 8.0, 32, 31),
    (2.0, 8.0, 32, 8),      # 31 * 2 / 8 = 7.75
    (5.0, 8.0, 32, 19),     # 31 * 5 / 8 = 19.375
    (3.4, 10.0, 11, 3),     # 10 * 3.4 / 10 = 3.4
    (3.6, 10.0, 11, 4),
    (6.0, 12.0, 32, 16),    # 31 * 6 / 12 = 15.5: Python's round, half to even
    (7.0, 12.0, 32, 18),    # 31 * 7 / 12 = 18.08
    (9.0, 8.0, 32, 31),     # past the end: clamped
    (-1.0, 8.0, 32, 0),
])
def test_seconds_to_token_by_hand(sec, duration, n, k):
    assert time_token(sec, duration, n) == k


def test_token_to_seconds_and_back():
    assert token_time(8, 8.0, 32) == pytest.approx(8 * 8.0 / 31)  # 2.0645 s
    assert token_time(31, 8.0, 32) == 8.0
    assert all(time_token(token_time(k, 6.5, 32), 6.5, 32) == k for k in range(32))


def test_cli_appends_the_tokens_after_the_tiny_vocabulary(tokenizers, capsys, tmp_path):
    from stvl_jax.data_cli import main

    plain, ext = tokenizers
    assert len(plain) == 512 and len(ext) == 544
    # appended in order after the 512 ids of the tiny tokenizer: <k> is id 512 + k
    assert [ext.convert_tokens_to_ids(f"<{k}>") for k in (0, 1, 11, 31)] == [512, 513, 523, 543]
    assert main(["tokenizer", "--out", str(tmp_path / "t"), "--time-tokens", "4"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_size"] == 516 and info["time_token_ids"] == [512, 515]


def test_each_time_token_is_one_token_and_decodes_back(tokenizers):
    from data_pipelines.grain.text import encode

    plain, ext = tokenizers
    text = "From <0> to <11>, and from <22> to <31>."
    ids = ext(text, add_special_tokens=False)["input_ids"]
    assert [i for i in ids if i >= 512] == [512, 523, 534, 543]
    assert ext.decode(ids, skip_special_tokens=True) == text  # plain added tokens: kept when decoding
    # the pipeline's piece encoder splits at added tokens itself: the same ids
    assert encode(ext, text, [])[0].tolist() == ids
    assert ext("<11>", add_special_tokens=False)["input_ids"] == [523]  # not <1> + "1>"
    # beyond N, and Qwen3-VL's frame stamps, stay ordinary text
    assert all(i < 512 for i in ext("<32> <1.5 seconds>", add_special_tokens=False)["input_ids"])
    assert all(i < 512 for i in plain(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("sec,duration", [(2.0, 8.0), (5.0, 8.0), (0.3, 4.5), (7.9, 8.0)])
def test_round_trip_seconds_token_text_ids_seconds(tokenizers, sec, duration):
    from data_pipelines.strefer.time_tokens import time_tokens_in

    _, ext = tokenizers
    k = time_token(sec, duration, 32)
    ids = ext(f"At <{k}>.", add_special_tokens=False)["input_ids"]
    (token,) = [i for i in ids if i >= 512]
    back = time_tokens_in(ext.decode(ids))
    assert token - 512 == k and back == [k]
    assert abs(token_time(back[0], duration, 32) - sec) <= duration / 31 / 2 + 1e-9  # within half a step


def test_count_and_check(tokenizers):
    from data_pipelines.strefer.time_tokens import check_time_tokens, time_token_count
    from stvl_jax.errors import InputError

    plain, ext = tokenizers
    assert time_token_count(plain) == 0 and time_token_count(ext) == 32
    assert check_time_tokens(ext, 32, "x") == list(range(512, 544))
    with pytest.raises(InputError, match=r"data.pipeline.tokenizer: .*lacks Strefer's time tokens.*first <0>.*"
                                         r"stvl data tokenizer --out DIR --time-tokens 32"):
        check_time_tokens(plain, 32, "data.pipeline.tokenizer")
    with pytest.raises(InputError, match="first <32>"):
        check_time_tokens(ext, 40, "x")


def test_base_tokenizer_extended_in_place_is_refused(tokenizers, tmp_path, capsys):
    from stvl_jax.cli import main

    plain, _ = tokenizers
    plain.save_pretrained(str(tmp_path / "base"))
    rc = main(["data", "tokenizer", "--base", str(tmp_path / "base"), "--out", str(tmp_path / "base"),
               "--time-tokens", "8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "is the --base tokenizer itself" in err
    assert main(["data", "tokenizer", "--base", str(tmp_path / "base"), "--out", str(tmp_path / "ext"),
                 "--time-tokens", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] == 520
