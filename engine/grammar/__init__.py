"""Structured generation: grammar specs (JSON schema, regex, EBNF, structural tag) compiled with
xgrammar into per-request token masks. `spec_check` is the part the API process uses."""

from engine.grammar.spec_check import ANY_JSON, GRAMMAR_KINDS, GrammarSpecError, check_grammar_spec

__all__ = ["ANY_JSON", "GRAMMAR_KINDS", "GrammarSpecError", "check_grammar_spec"]
