"""Property test: any unsupported keyword planted anywhere in a schema from the supported subset is
refused, naming its JSON pointer (the outputs of such schemas are validated in test_grammar_engine)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.grammar import GrammarSpecError, check_grammar_spec
from tests.engine.schema_strategies import schemas

UNSUPPORTED = [("not", {"type": "null"}), ("if", {"type": "integer"}), ("then", {}), ("else", {}),
               ("dependentRequired", {"a": ["b"]}), ("dependentSchemas", {"a": {}}), ("uniqueItems", True),
               ("contains", {"type": "integer"}), ("minContains", 1), ("maxContains", 2),
               ("allOf", [{"type": "integer"}, {"minimum": 1}]), ("oneOf", [{"type": "integer"}, {"type": "number"}]),
               ("$dynamicRef", "#x"), ("unevaluatedProperties", {"type": "integer"})]


def _subschemas(schema, pointer=""):
    """(pointer, subschema) for every schema object nested in `schema`."""
    if not isinstance(schema, dict):
        return
    yield pointer, schema
    for key in ("properties", "$defs"):
        for name, sub in (schema.get(key) or {}).items():
            yield from _subschemas(sub, f"{pointer}/{key}/{name}")
    if isinstance(schema.get("items"), dict):
        yield from _subschemas(schema["items"], f"{pointer}/items")
    for key in ("anyOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key) or []):
            yield from _subschemas(sub, f"{pointer}/{key}/{i}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas(), data=st.data())
def test_planted_unsupported_keyword_is_refused_with_its_pointer(schema, data):
    check_grammar_spec("json_schema", json.dumps(schema))  # the generated subset itself is accepted
    schema = json.loads(json.dumps(schema))  # a private copy: strategies share their `just` dicts
    spots = list(_subschemas(schema))
    pointer, target = data.draw(st.sampled_from(spots))
    keyword, value = data.draw(st.sampled_from(UNSUPPORTED))
    target[keyword] = value
    with pytest.raises(GrammarSpecError) as err:
        check_grammar_spec("json_schema", json.dumps(schema))
    assert err.value.param == "json_schema"
    assert err.value.keyword == keyword and err.value.pointer == f"{pointer}/{keyword}", str(err.value)
