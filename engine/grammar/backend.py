"""Grammar backends: turn (kind, spec) into a compiled grammar for this model's vocabulary and
make per-request matchers from it. xgrammar is the one built in; `none` refuses constrained
requests."""

from __future__ import annotations

import json
from typing import Any

from engine.grammar.fill_choice import FillChoice
from engine.grammar.spec_check import ANY_JSON, GrammarSpecError, compiler_message, parse_schema

# xgrammar 0.2.9 writes length-bounded JSON strings (minLength/maxLength, propertyNames) with this
# character class, which lets raw control characters into the string: invalid JSON. Tessera
# swaps in the class xgrammar uses for unbounded strings (no escapes inside bounded strings, which
# only narrows the output).
_LOOSE_STRING_CHAR = '[^\\"\\\\\\r\\n]'
# xgrammar's UTF-8 decoding takes an encoded surrogate (bytes ED A0 80 .. ED BF BF) for one character of a
# negated class; no text can hold one, so it decoded to three U+FFFD and broke maxLength (docs/API.md). Both
# string classes get the surrogates excluded.
_NO_SURROGATES = '\\uD800-\\uDFFF'
_JSON_STRING_CHAR = '[^\\0-\\x1f\\"\\\\' + _NO_SURROGATES + ']'
_BASIC_STRING_CHAR = '[^\\0-\\x1f\\"\\\\\\r\\n]'
_BASIC_STRING_CHAR_STRICT = '[^\\0-\\x1f\\"\\\\\\r\\n' + _NO_SURROGATES + ']'


class GrammarBackendUnavailable(RuntimeError):
    """Constrained decoding is off (--grammar-backend none, no tokenizer, xgrammar missing)."""


class XGrammarBackend:
    """Compiles against the model's vocabulary: `vocab_size` is the LM head's width (it may exceed the
    tokenizer's, padded rows are never allowed), `stop_ids` the engine's EOS ids, the only tokens a
    grammar may end with."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: list[int],
                 max_whitespace_cnt: int | None = None) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.vocab_size = vocab_size
        self.stop_ids = list(stop_ids)
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=self.stop_ids or None)
        # Our own cache (keyed by spec, failures included) sits in front; xgrammar's would double it.
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.max_whitespace_cnt = max_whitespace_cnt
        self._single: Any = None
        self._pool: Any = None
        self.fill_choice = FillChoice()

    def _json_kwargs(self) -> dict[str, Any]:
        # Default: no free-running whitespace (fixed ", " / ": " separators), so a weak model cannot
        # loop on spaces until max_tokens; the flag allows a bounded amount instead.
        if self.max_whitespace_cnt is None:
            return {"any_whitespace": False}
        return {"any_whitespace": True, "max_whitespace_cnt": self.max_whitespace_cnt}

    def json_grammar(self, schema: str) -> Any:
        grammar = self._xgr.Grammar.from_json_schema(schema, **self._json_kwargs())
        text = str(grammar)
        if _LOOSE_STRING_CHAR not in text and _BASIC_STRING_CHAR not in text:
            return grammar
        return self._xgr.Grammar.from_ebnf(text.replace(_LOOSE_STRING_CHAR, _JSON_STRING_CHAR)
                                           .replace(_BASIC_STRING_CHAR, _BASIC_STRING_CHAR_STRICT))

    def compile(self, kind: str, spec: str) -> Any:
        """Raises GrammarSpecError with the compiler's message."""
        try:
            if kind == "json_schema":
                if spec == ANY_JSON:
                    return self.compiler.compile_grammar(self.json_grammar("{}"))
                parse_schema(spec)  # refuse what xgrammar would silently ignore
                return self.compiler.compile_grammar(self.json_grammar(spec))
            if kind == "regex":
                return self.compiler.compile_regex(spec)
            if kind == "ebnf":
                return self.compiler.compile_grammar(spec)
            if kind == "structural_tag":
                tag = json.loads(spec)
                _bound_tag_whitespace(tag, self.max_whitespace_cnt or 1)
                return self.compiler.compile_structural_tag(json.dumps(tag))
        except GrammarSpecError:
            raise
        except Exception as exc:
            raise GrammarSpecError(f"invalid {kind}: {compiler_message(exc)}", kind) from None
        raise GrammarSpecError(f"unknown grammar kind {kind!r}", kind)

    def matcher(self, compiled: Any) -> Any:
        return self._xgr.GrammarMatcher(compiled, override_stop_tokens=self.stop_ids or None)

    def bitmask(self, rows: int) -> Any:
        return self._xgr.allocate_token_bitmask(rows, self.vocab_size)

    def fill(self, matchers: list[Any], bitmask: Any, rows: list[int]) -> None:
        """Fills bitmask[rows[i]] from matchers[i]: larger batches in one C++ call, on one thread or on
        xgrammar's pool, whichever `fill_choice` measures cheaper."""
        if len(matchers) < 4:
            for matcher, row in zip(matchers, rows):
                matcher.fill_next_token_bitmask(bitmask, row)
            return
        if self._single is None:
            self._single = self._xgr.BatchGrammarMatcher(1)
            self._pool = self._xgr.BatchGrammarMatcher("auto")
        self.fill_choice.run(
            len(rows),
            lambda: self._single.batch_fill_next_token_bitmask(matchers, bitmask, rows),
            lambda: self._pool.batch_fill_next_token_bitmask(matchers, bitmask, rows))


def make_backend(name: str, tokenizer: Any, vocab_size: int, stop_ids: list[int],
                 max_whitespace_cnt: int | None) -> Any:
    if name == "none":
        raise GrammarBackendUnavailable("constrained decoding is off on this server (--grammar-backend none)")
    if tokenizer is None:
        raise GrammarBackendUnavailable("constrained decoding needs the tokenizer (the server runs with "
                                        "--skip-tokenizer-init)")
    if name == "xgrammar":
        try:
            return XGrammarBackend(tokenizer, vocab_size, stop_ids, max_whitespace_cnt)
        except ImportError:
            raise GrammarBackendUnavailable("xgrammar is not installed (pip install 'tessera[grammar]')") from None
    if name == "llguidance":
        from engine.grammar.llguidance_backend import LLGuidanceBackend

        try:
            return LLGuidanceBackend(tokenizer, vocab_size, stop_ids, max_whitespace_cnt)
        except ImportError:
            raise GrammarBackendUnavailable("llguidance is not installed (pip install llguidance)") from None
    raise GrammarBackendUnavailable(f"unknown grammar backend {name!r}")


def _bound_tag_whitespace(node: Any, limit: int) -> None:
    """JSON inside a structural tag gets at most `limit` whitespace characters between tokens unless
    the tag says otherwise (xgrammar's default there is unbounded; it has no "none" setting)."""
    if isinstance(node, dict):
        if node.get("type") == "json_schema" and "json_schema" in node:
            node.setdefault("max_whitespace_cnt", limit)
        for value in node.values():
            _bound_tag_whitespace(value, limit)
    elif isinstance(node, list):
        for value in node:
            _bound_tag_whitespace(value, limit)
