"""Token masks: the packed bitmask unpacks to the right tokens, padded LM-head rows are never allowed,
and EOS is allowed exactly where the grammar may end."""

from __future__ import annotations

import os

import torch
from transformers import AutoTokenizer

from engine.grammar.backend import XGrammarBackend
from engine.grammar.masking import unpack_bitmask

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "models", "demo")


def test_unpack_matches_bit_order():
    words = torch.tensor([[0b1011, -1], [0, -(2**31)]], dtype=torch.int32)  # -(2**31): only bit 31 set
    allowed = unpack_bitmask(words, 40, torch.device("cpu"))
    assert allowed.shape == (2, 40)
    assert allowed[0, :4].tolist() == [True, True, False, True] and not allowed[0, 4:32].any()
    assert allowed[0, 32:].all()
    assert allowed[1].nonzero().flatten().tolist() == []  # bit 31 of word 1 is token 63, past the vocab


def test_padded_vocab_and_eos_placement():
    tok = AutoTokenizer.from_pretrained(DEMO)
    padded = len(tok) + 40  # an LM head wider than the tokenizer, as some models have
    eos = tok.eos_token_id
    backend = XGrammarBackend(tok, padded, [eos])
    matcher = backend.matcher(backend.compile("regex", "ab?"))
    bitmask = backend.bitmask(1)

    def allowed() -> torch.Tensor:
        bitmask.fill_(-1)
        backend.fill([matcher], bitmask, [0])
        return unpack_bitmask(bitmask, padded, torch.device("cpu"))[0]

    first = allowed()
    assert not first[len(tok):].any() and not first[eos]
    assert all(tok.decode([int(t)]).startswith("a") for t in first.nonzero().flatten())
    assert matcher.accept_token(tok.convert_tokens_to_ids("a"))
    after_a = allowed()
    assert after_a[eos] and not after_a[len(tok):].any()  # "a" is complete: EOS allowed, "b" too
    assert {tok.decode([int(t)]) for t in after_a.nonzero().flatten() if t != eos} == {"b"}


def test_json_whitespace_default_none_and_bounded_with_the_flag():
    tok = AutoTokenizer.from_pretrained(DEMO)
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}'

    def accepts(backend: XGrammarBackend, text: str) -> bool:
        matcher = backend.matcher(backend.compile("json_schema", schema))
        return matcher.accept_string(text) and matcher.is_completed()

    strict = XGrammarBackend(tok, len(tok), [tok.eos_token_id])
    assert accepts(strict, '{"a": 1}')
    assert not accepts(strict, '{"a":  1}') and not accepts(strict, '{ "a": 1}')
    bounded = XGrammarBackend(tok, len(tok), [tok.eos_token_id], max_whitespace_cnt=2)
    assert accepts(bounded, '{"a":1}') and accepts(bounded, '{ "a":  1\n}')
    assert not accepts(bounded, '{"a":   1}')


def test_json_strings_refuse_encoded_surrogates():
    """xgrammar's UTF-8 decoding would take bytes ED A0 80 (U+D800, which no text can hold) for one string
    character; the backend's JSON grammars exclude U+D800-DFFF from both string classes (bounded and not),
    so a `maxLength` counts what the decoded text holds. Valid 2-, 3- and 4-byte characters still pass."""
    tok = AutoTokenizer.from_pretrained(DEMO)
    backend = XGrammarBackend(tok, len(tok), [tok.eos_token_id])
    for schema in ('{"type": "string"}', '{"type": "string", "maxLength": 4}',
                   '{"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}'):
        compiled = backend.compile("json_schema", schema)
        wrap = (lambda b: b'{"s": "' + b + b'"}') if "object" in schema else (lambda b: b'"' + b + b'"')
        for body, ok in ((b"\xed\xa0\x80", False), (b"\xed\xbf\xbf", False), (b"<\xed\xa0\x80H", False),
                         (b"\xe4\xb8\x80", True), (b"\xed\x9f\xbf", True), (b"\xcf\x80", True),
                         (b"\xf0\x9f\x98\x80", True), (b"ab", True)):
            matcher = backend.matcher(compiled)
            assert matcher.accept_string(wrap(body)) is ok, (schema, body)
