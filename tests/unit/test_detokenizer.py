"""Incremental detokenization never emits replacement characters for split multi-byte text."""

from __future__ import annotations

from engine.detokenizer import IncrementalDetokenizer, hold_back_partial_stop, trim_stop_string


def test_multibyte_characters_split_across_tokens(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    text = "café 東京 🙂 naïve"
    ids = tok.encode(text)
    detok = IncrementalDetokenizer(tok)
    seen = []
    for i, t in enumerate(ids):
        seen.append(detok.add([t], is_final=i == len(ids) - 1))
    assert seen[-1] == text
    assert all("\ufffd" not in s for s in seen)
    assert all(seen[i + 1].startswith(seen[i]) for i in range(len(seen) - 1))


def test_stop_string_helpers():
    assert trim_stop_string("hello world. bye", ["."]) == ("hello world", ".")
    assert trim_stop_string("abc", ["x"]) == ("abc", None)
    assert hold_back_partial_stop("the end\n", ["\n\n"]) == "the end"
    assert hold_back_partial_stop("the end", ["\n\n"]) == "the end"
