"""Validation of grammar specs without a tokenizer: the API process calls it before a request is
sent, so a bad spec is a 400 there and never an engine-side failure.

    check_grammar_spec("json_schema", '{"type": "object"}')   # None, or raises GrammarSpecError
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.grammar.schema_subset import SchemaSubsetError, check_schema_subset
from engine.sampling_params import SamplingParamsError

GRAMMAR_KINDS = ("json_schema", "regex", "ebnf", "structural_tag")
ANY_JSON = "$$ANY$$"  # json_schema value meaning "any JSON value" (SGLang's spelling)


class GrammarSpecError(SamplingParamsError):
    """A grammar spec Tessera cannot enforce; `param` names the field (json_schema, regex, ...),
    `pointer`/`keyword` locate an unsupported JSON-schema keyword when that is the cause."""

    def __init__(self, message: str, param: str, pointer: str | None = None, keyword: str | None = None) -> None:
        super().__init__(message, param)
        self.pointer = pointer
        self.keyword = keyword


# xgrammar's messages start with "[hh:mm:ss] /project/cpp/file.cc:123: "; users need the rest.
_CPP_PREFIX = re.compile(r"^\s*(\[[0-9:]+\]\s*)?(/\S+\.(cc|h):\d+:\s*)?(Check failed: .*? is false: )?")


def compiler_message(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = _CPP_PREFIX.sub("", lines[0]) if lines else type(exc).__name__
    return text.strip() or type(exc).__name__


def parse_schema(spec: str) -> Any:
    """The schema as a Python value; raises GrammarSpecError on bad JSON or unsupported keywords."""
    try:
        schema = json.loads(spec)
    except (TypeError, ValueError) as exc:
        raise GrammarSpecError(f"json_schema is not valid JSON: {exc}", "json_schema") from None
    try:
        check_schema_subset(schema)
    except SchemaSubsetError as exc:
        raise GrammarSpecError(str(exc), "json_schema", exc.pointer, exc.keyword) from None
    return schema


def check_grammar_spec(kind: str, spec: str) -> None:
    """Raises GrammarSpecError when `spec` of `kind` is invalid or asks for something the engine
    cannot enforce. Costs about what a grammar compile costs without the token masks (~ms)."""
    import xgrammar as xgr

    if kind not in GRAMMAR_KINDS:
        raise GrammarSpecError(f"unknown grammar kind {kind!r}", kind)
    if not isinstance(spec, str) or not spec.strip():
        raise GrammarSpecError(f"{kind} must be a non-empty string", kind)
    try:
        if kind == "json_schema":
            if spec == ANY_JSON:
                return
            parse_schema(spec)
            xgr.Grammar.from_json_schema(spec, any_whitespace=False)
        elif kind == "regex":
            xgr.Grammar.from_regex(spec)
        elif kind == "ebnf":
            xgr.Grammar.from_ebnf(spec)
        else:
            _check_structural_tag(spec)
    except GrammarSpecError:
        raise
    except Exception as exc:  # the compiler's own RuntimeError / ValueError
        raise GrammarSpecError(f"invalid {kind}: {compiler_message(exc)}", kind) from None


def _check_structural_tag(spec: str) -> None:
    import xgrammar as xgr

    try:
        tag = json.loads(spec)
    except ValueError as exc:
        raise GrammarSpecError(f"structural_tag is not valid JSON: {exc}", "structural_tag") from None
    for pointer, schema in _tag_schemas(tag, ""):
        try:
            check_schema_subset(schema, pointer)
        except SchemaSubsetError as exc:
            raise GrammarSpecError(str(exc), "structural_tag", exc.pointer, exc.keyword) from None
    xgr.Grammar.from_structural_tag(spec)


def _tag_schemas(node: Any, pointer: str):
    """JSON schemas embedded in a structural tag (legacy `structures[].schema` and the newer
    `{"type": "json_schema", "json_schema": ...}` formats)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("schema", "json_schema") and isinstance(value, (dict, bool)):
                yield f"{pointer}/{key}", value
            else:
                yield from _tag_schemas(value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _tag_schemas(value, f"{pointer}/{i}")
