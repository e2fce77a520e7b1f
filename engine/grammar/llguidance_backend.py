"""The optional llguidance backend (`--grammar-backend llguidance`, `pip install llguidance`).

Same contract as XGrammarBackend: compile(kind, spec), matcher(compiled), bitmask(rows), fill(...).
Its token bitmask has xgrammar's layout (bit j of int32 word i allows token 32 i + j), so masking,
jump-forward and the scheduler are shared. EBNF goes through llguidance's GBNF-to-Lark converter;
structural tags are xgrammar's format and are refused here.
"""

from __future__ import annotations

import codecs
from typing import Any

from engine.grammar.spec_check import ANY_JSON, GrammarSpecError, parse_schema


class LLGuidanceMatcher:
    """GrammarMatcher's interface (the part the engine uses) over llguidance.LLMatcher."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def accept_token(self, token: int) -> bool:
        return bool(self.inner.consume_token(token)) and not self.inner.is_error()

    def is_terminated(self) -> bool:
        return self.inner.is_stopped()

    def is_completed(self) -> bool:
        return self.inner.is_accepting()

    def rollback(self, num_tokens: int) -> None:
        self.inner.rollback(num_tokens)

    def find_jump_forward_string(self) -> str:
        # Forced bytes may end inside a UTF-8 character: keep the complete characters only.
        return codecs.getincrementaldecoder("utf-8")("ignore").decode(self.inner.compute_ff_bytes(), final=False)


class LLGuidanceBackend:
    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: list[int],
                 max_whitespace_cnt: int | None = None) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self._llg = llguidance
        self.vocab_size = vocab_size
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop_ids or None)
        # No free whitespace by default (", " / ": " separators, as with xgrammar); the flag allows
        # up to N whitespace characters.
        if max_whitespace_cnt is None:
            self.json_options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
        else:
            self.json_options = {"whitespace_pattern": f"[\\x20\\x0A\\x0D\\x09]{{0,{max_whitespace_cnt}}}"}

    def compile(self, kind: str, spec: str) -> str:
        matcher_cls = self._llg.LLMatcher
        if kind == "json_schema":
            schema = "{}" if spec == ANY_JSON else spec
            if spec != ANY_JSON:
                parse_schema(spec)
            try:
                grammar = matcher_cls.grammar_from_json_schema(schema, defaults=self.json_options)
            except ValueError as exc:
                raise GrammarSpecError(f"invalid json_schema: {exc}", kind) from None
        elif kind == "regex":
            grammar = matcher_cls.grammar_from_regex(spec)
        elif kind == "ebnf":
            from llguidance.gbnf_to_lark import any_to_lark

            try:
                grammar = matcher_cls.grammar_from_lark(any_to_lark(spec))
            except Exception as exc:
                raise GrammarSpecError(f"invalid ebnf: {exc}", kind) from None
        elif kind == "structural_tag":
            raise GrammarSpecError("structural_tag needs --grammar-backend xgrammar", kind)
        else:
            raise GrammarSpecError(f"unknown grammar kind {kind!r}", kind)
        error = matcher_cls.validate_grammar(grammar, self.tokenizer)
        if error and not error.startswith("WARNING"):
            raise GrammarSpecError(f"invalid {kind}: {error.strip().splitlines()[0]}", kind)
        return grammar

    def matcher(self, grammar: str) -> LLGuidanceMatcher:
        return LLGuidanceMatcher(self._llg.LLMatcher(self.tokenizer, grammar, log_level=0))

    def bitmask(self, rows: int) -> Any:
        return self._llg.torch.allocate_token_bitmask(rows, self.vocab_size)

    def fill(self, matchers: list[LLGuidanceMatcher], bitmask: Any, rows: list[int]) -> None:
        for matcher, row in zip(matchers, rows):
            self._llg.torch.fill_next_token_bitmask(matcher.inner, bitmask, row)


