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


def test_loaded_tokenizer_does_not_warn_on_long_prompts(tiny_llama, tmp_path):
    """The server bounds prompts by the context itself; transformers' per-prompt length warning is noise in the
    log. The model's tokenizer is given a 16-token model_max_length so a short text crosses it."""
    import json
    import logging
    import shutil

    from transformers.utils import logging as hf_logging

    from engine.tokenizer import load_tokenizer

    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    config = model / "tokenizer_config.json"
    data = json.loads(config.read_text()) if config.exists() else {}
    config.write_text(json.dumps({**data, "model_max_length": 16}))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    hf_logger = hf_logging.get_logger("transformers")
    hf_logger.addHandler(handler)
    try:
        ids = load_tokenizer(str(model)).encode("word " * 200)
    finally:
        hf_logger.removeHandler(handler)
    assert len(ids) > 16
    assert not [r for r in records if "sequence length is longer" in r.getMessage()], records
