"""engine.grammar.spec_check: what the API process refuses before a request reaches the engine."""

from __future__ import annotations

import json

import pytest

from engine.grammar import GrammarSpecError, check_grammar_spec
from engine.sampling_params import SamplingParams, SamplingParamsError


@pytest.mark.parametrize("schema,pointer,keyword", [
    ({"not": {"type": "string"}}, "/not", "not"),
    ({"type": "object", "properties": {"a": {"type": "integer", "if": {"minimum": 3}, "then": {}}}},
     "/properties/a/if", "if"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "/dependentRequired", "dependentRequired"),
    ({"type": "object", "dependentSchemas": {"a": {}}}, "/dependentSchemas", "dependentSchemas"),
    ({"type": "array", "uniqueItems": True}, "/uniqueItems", "uniqueItems"),
    ({"type": "array", "contains": {"type": "integer"}}, "/contains", "contains"),
    ({"type": "number", "multipleOf": 0.5}, "/multipleOf", "multipleOf"),
    ({"allOf": [{"type": "integer"}, {"minimum": 3}]}, "/allOf", "allOf"),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "/oneOf", "oneOf"),
    ({"type": "string", "format": "idn-email"}, "/format", "format"),
    ({"type": "string", "pattern": "a+", "maxLength": 3}, "/pattern", "pattern"),
    ({"$defs": {"x/y": {"type": "array", "items": {"not": {}}}}, "$ref": "#/$defs/x~1y"},
     "/$defs/x~1y/items/not", "not"),
    ({"type": "object", "properties": {"a": {"anyOf": [{"type": "null"}, {"$ref": "https://x.org/s"}]}}},
     "/properties/a/anyOf/1/$ref", "$ref"),
])
def test_unsupported_keywords_name_pointer_and_keyword(schema, pointer, keyword):
    with pytest.raises(GrammarSpecError) as err:
        check_grammar_spec("json_schema", json.dumps(schema))
    assert err.value.param == "json_schema"
    assert (err.value.pointer, err.value.keyword) == (pointer, keyword)
    assert pointer in str(err.value) and f"'{keyword}'" in str(err.value)


@pytest.mark.parametrize("schema", [
    {"type": "integer", "multipleOf": 3, "minimum": 0},
    {"type": "array", "items": {"type": "string"}, "uniqueItems": False, "maxItems": 2},
    {"allOf": [{"type": "integer"}]},
    {"oneOf": [{"type": "integer"}]},
    {"type": "string", "format": "date-time", "title": "t", "description": "d", "examples": ["x"]},
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": "string"}},
     "additionalProperties": False, "unevaluatedProperties": False},
])
def test_supported_schemas_pass(schema):
    check_grammar_spec("json_schema", json.dumps(schema))


@pytest.mark.parametrize("kind,spec,fragment", [
    ("json_schema", "{not json", "not valid JSON"),
    ("json_schema", '{"type": "objec"}', 'Unsupported type "objec"'),
    ("regex", "(ab", "parenthesis is not closed"),
    ("regex", "a{2,", "Invalid repetition count"),
    ("ebnf", 'root ::= "a" | ', "Expect element"),
    ("ebnf", "root ::= foo", 'Rule "foo" is not defined'),
    ("structural_tag", "{}", "format"),
])
def test_invalid_specs_carry_the_compilers_message(kind, spec, fragment):
    with pytest.raises(GrammarSpecError) as err:
        check_grammar_spec(kind, spec)
    assert err.value.param == kind and fragment in str(err.value)
    assert "/project/" not in str(err.value)  # the compiler's source location is stripped


def test_valid_specs_pass():
    check_grammar_spec("json_schema", "$$ANY$$")
    check_grammar_spec("regex", r"(yes|no) [0-9]{3}")
    check_grammar_spec("ebnf", 'root ::= "a" [0-9]+')
    check_grammar_spec("structural_tag", json.dumps(
        {"type": "structural_tag", "format": {"type": "const_string", "value": "hi"}}))


def test_sampling_params_grammar_keys():
    sp = SamplingParams.from_dict({"json_schema": {"type": "integer"}, "regex": None, "ebnf": ""})
    assert sp.grammar == ("json_schema", '{"type": "integer"}')
    assert SamplingParams.from_dict({"regex": "a+"}).grammar == ("regex", "a+")
    assert SamplingParams.from_dict({}).grammar is None
    with pytest.raises(SamplingParamsError) as err:
        SamplingParams.from_dict({"regex": "a", "json_schema": "{}"})
    assert "'json_schema' and 'regex'" in str(err.value)
    with pytest.raises(SamplingParamsError) as err:
        SamplingParams.from_dict({"regex": 3})
    assert err.value.param == "regex"
    # The dict round trip (client -> engine message) keeps the grammar.
    assert SamplingParams.from_dict(sp.to_dict()).grammar == sp.grammar


PET_UNION = {  # what pydantic writes for a discriminated union: oneOf over $refs plus a discriminator
    "type": "object", "required": ["pet"],
    "properties": {"pet": {"oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
                           "discriminator": {"propertyName": "kind",
                                             "mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}}}},
    "$defs": {
        "Cat": {"type": "object", "required": ["kind", "lives"], "additionalProperties": False,
                "properties": {"kind": {"const": "cat", "type": "string"},
                               "lives": {"type": "integer", "minimum": 0, "maximum": 9}}},
        "Dog": {"type": "object", "required": ["kind", "good"], "additionalProperties": False,
                "properties": {"kind": {"enum": ["dog", "puppy"]}, "good": {"type": "boolean"}}}},
}


@pytest.mark.parametrize("schema", [
    PET_UNION,
    {"oneOf": [{"type": "integer"}, {"type": "null"}, {"type": "array", "items": {"type": "string"}}]},
    {"oneOf": [{"type": "object", "required": ["v"], "properties": {"v": {"const": 1}}},
               {"type": "object", "required": ["v"], "properties": {"v": {"const": "1"}}}]},
])
def test_one_of_with_provably_disjoint_branches_passes(schema):
    check_grammar_spec("json_schema", json.dumps(schema))


@pytest.mark.parametrize("branches", [
    [{"type": "integer"}, {"type": ["string", "number"]}],  # integers are numbers
    [{"type": "object", "required": ["k"], "properties": {"k": {"const": 1}}},
     {"type": "object", "required": ["k"], "properties": {"k": {"const": 1.0}}}],  # 1 == 1.0 in JSON Schema
    [{"type": "object", "required": ["k"], "properties": {"k": {"enum": ["a", "b"]}}},
     {"type": "object", "required": ["k"], "properties": {"k": {"enum": ["b", "c"]}}}],
    [{"type": "object", "properties": {"k": {"const": "a"}}},  # not required: {} matches both
     {"type": "object", "properties": {"k": {"const": "b"}}}],
    [{"$ref": "#/$defs/missing"}, {"type": "null"}],
])
def test_one_of_with_overlapping_branches_is_refused(branches):
    with pytest.raises(GrammarSpecError) as err:
        check_grammar_spec("json_schema", json.dumps({"oneOf": branches}))
    assert err.value.keyword == "oneOf"
