"""Strefer's temporal tokens `<k>` in a tokenizer: added to the vocabulary, one token each.

Second s of a clip lasting D s is `<k>`, k = round((N - 1) * s / D) (`instructions.time_token`); a model learns the
N tokens as words of its vocabulary, as BLIP-3-Strefer does (`tokenizer.add_tokens`, then the embedding grows to
`len(tokenizer)`). They are plain added tokens, not special ones: decoding with `skip_special_tokens=True` keeps
them, so a generated answer reads back as the template wrote it.

    tok = AutoTokenizer.from_pretrained(base)
    first, last = add_time_tokens(tok, 32)     # <0> .. <31> at ids len(base) .. len(base) + 31
    check_time_tokens(tok, 32, "data.pipeline.tokenizer")   # InputError naming what is missing
"""

from __future__ import annotations

import re

from stvl_jax.errors import InputError

TIME_TOKEN = re.compile(r"<(\d+)>")


def time_token_text(k: int) -> str:
    return f"<{int(k)}>"


def time_token_strings(n: int) -> list[str]:
    """`<0>` .. `<n-1>`."""
    return [time_token_text(k) for k in range(n)]


def time_tokens_in(text: str) -> list[int]:
    """The k of every `<k>` in `text`, in order."""
    return [int(m) for m in TIME_TOKEN.findall(text)]


def time_token_ids(tokenizer, n: int) -> list[int | None]:
    """The id of each `<k>` (k < n) when it is one token of the vocabulary, else None."""
    vocab = tokenizer.get_vocab()
    out = []
    for text in time_token_strings(n):
        i = vocab.get(text)
        out.append(i if i is not None and tokenizer.encode(text, add_special_tokens=False) == [i] else None)
    return out


def time_token_count(tokenizer, limit: int = 4096) -> int:
    """N such that `<0>` .. `<N-1>` are all single tokens of the vocabulary (0: the tokenizer has none)."""
    vocab = tokenizer.get_vocab()
    n = 0
    while n < limit and time_token_text(n) in vocab:
        n += 1
    while n and None in time_token_ids(tokenizer, n):  # in the vocabulary but split by the tokenizer: not usable
        n = time_token_ids(tokenizer, n).index(None)
    return n


def add_time_tokens(tokenizer, n: int) -> tuple[int, int]:
    """Add `<0>` .. `<n-1>` (those not yet in the vocabulary) as plain tokens -> (first id, last id). The ids are
    consecutive when none was there before."""
    if n < 2:
        raise InputError(f"num_time_tokens must be >= 2, got {n}")
    missing = [t for t, i in zip(time_token_strings(n), time_token_ids(tokenizer, n)) if i is None]
    tokenizer.add_tokens(missing, special_tokens=False)
    ids = time_token_ids(tokenizer, n)
    if None in ids:  # e.g. a tokenizer whose normalizer rewrites the text
        raise InputError(f"tokenizer cannot hold {time_token_text(ids.index(None))} as one token")
    return ids[0], ids[-1]


def check_time_tokens(tokenizer, n: int, what: str) -> list[int]:
    """The ids of `<0>` .. `<n-1>`; InputError naming `what` when one is not a single token."""
    ids = time_token_ids(tokenizer, n)
    if None in ids:
        missing = [time_token_text(k) for k, i in enumerate(ids) if i is None]
        raise InputError(f"{what}: the tokenizer lacks Strefer's time tokens ({len(missing)} of <0>..<{n - 1}> are "
                         f"not single tokens, first {missing[0]}); make one with `stvl data tokenizer --out DIR "
                         f"--time-tokens {n}` (add --base DIR to extend your own)")
    return ids
