"""Constrained decoding on a tiny random-weight model: every output obeys its grammar, because
nothing but the grammar makes it do so (hypothesis draws the JSON schemas of the property test)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine
from engine.grammar import GrammarSpecError
from tests.engine.schema_strategies import schemas

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
        # Bounded everywhere: a random model must finish within max_new_tokens.
        "email": {"anyOf": [{"type": "string", "pattern": "^[a-z]{1,6}@[a-z]{1,5}\\.com$"}, {"type": "null"}]},
    },
    "required": ["name", "age", "tags", "email"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(tiny_llama):
    with Engine(model_path=tiny_llama, device="cpu", random_seed=0, context_length=512) as e:
        yield e


def _sample(n: int, **extra) -> list[dict]:
    return [{"max_new_tokens": 96, "temperature": 1.0, "sampling_seed": 100 + i, **extra} for i in range(n)]


def test_json_schema_outputs_validate(engine):
    outs = engine.generate(input_ids=[[5, 6, 7]] * 4, sampling_params=_sample(4, json_schema=json.dumps(PERSON)))
    for out in outs:
        assert out["meta_info"]["finish_reason"]["type"] == "stop", out
        jsonschema.validate(json.loads(out["text"]), PERSON)
    assert len({o["text"] for o in outs}) > 1  # sampling still varies within the grammar


def test_discriminated_one_of_outputs_validate(engine):
    """oneOf is accepted when its branches are provably disjoint; jsonschema checks exactly-one."""
    from tests.unit.test_grammar_spec import PET_UNION

    outs = engine.generate(input_ids=[[5, 6, 7]] * 4, sampling_params=_sample(4, json_schema=json.dumps(PET_UNION)))
    for out in outs:
        assert out["meta_info"]["finish_reason"]["type"] == "stop", out
        jsonschema.validate(json.loads(out["text"]), PET_UNION)


def test_any_json_and_greedy(engine):
    out = engine.generate(input_ids=[9, 10], sampling_params={"max_new_tokens": 200, "temperature": 0,
                                                              "json_schema": "$$ANY$$"})
    if out["meta_info"]["finish_reason"]["type"] == "stop":
        json.loads(out["text"])
    else:  # a random model may never close a long value; what it wrote is still a JSON prefix
        assert out["text"][:1] in '{["-0123456789tfn'


def test_regex_fullmatch(engine):
    patterns = [r"(yes|no) [0-9]{3}", r"[a-z]{2,5}@[a-z]{3}\.(com|org)", r"-?(0|[1-9][0-9]{0,4})(\.[0-9]{1,2})?",
                r"\((a|b)\)\*[xyz]+!"]
    outs = engine.generate(input_ids=[[5, 6, 7]] * len(patterns),
                           sampling_params=[{"max_new_tokens": 40, "temperature": 1.0, "sampling_seed": 3,
                                             "regex": p} for p in patterns])
    for pattern, out in zip(patterns, outs):
        assert out["meta_info"]["finish_reason"]["type"] == "stop", (pattern, out)
        assert re.fullmatch(pattern, out["text"]), (pattern, out["text"])


def test_ebnf_output_parses(engine):
    grammar = 'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= [0-9]+ | "(" expr ")"'
    out = engine.generate(input_ids=[5, 6], sampling_params={"max_new_tokens": 60, "temperature": 0.7,
                                                             "sampling_seed": 1, "ebnf": grammar})
    assert out["meta_info"]["finish_reason"]["type"] == "stop", out
    text = out["text"]
    assert re.fullmatch(r"[0-9+\-()]+", text)
    eval(compile(text, "<expr>", "eval"), {"__builtins__": {}})  # the arithmetic grammar is Python syntax


def test_bad_spec_is_an_error_before_the_engine(engine):
    with pytest.raises(GrammarSpecError) as err:
        engine.generate(input_ids=[5], sampling_params={"json_schema": json.dumps({"not": {}})})
    assert err.value.param == "json_schema" and err.value.pointer == "/not"


# derandomize: the same drawn schemas on every run, so CI cannot turn red on a fresh draw. A random draw found
# (fourteenth session) that xgrammar takes a UTF-8-encoded surrogate (bytes ED A0 80) for one string character,
# which the text decodes to three U+FFFD: plain JSON strings now exclude surrogates (engine/grammar/backend.py),
# but a drawn `pattern` with `.` still admits them (docs/API.md, "Known gap").
@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(batch=st.lists(schemas(), min_size=8, max_size=8))
def test_generated_schemas_give_valid_outputs(engine, batch):
    """Objects, arrays, tuples, enums, consts, $ref, anyOf, bounds, patterns and formats drawn by
    hypothesis: every output parses and validates."""
    outs = engine.generate(input_ids=[[5 + i, 6, 7] for i in range(len(batch))], sampling_params=[
        {"max_new_tokens": 200, "temperature": 1.0, "sampling_seed": i, "json_schema": json.dumps(s)}
        for i, s in enumerate(batch)])
    for schema, out in zip(batch, outs):
        reason = out["meta_info"]["finish_reason"]
        assert reason["type"] == "stop", (schema, out["text"], reason)
        jsonschema.validate(json.loads(out["text"]), schema)


def test_structural_tag(engine):
    tag = {"type": "structural_tag", "format": {"type": "sequence", "elements": [
        {"type": "const_string", "value": "<call>"},
        {"type": "json_schema", "json_schema": {"type": "object", "properties": {"n": {"type": "integer",
                                                                                      "minimum": 0, "maximum": 9}},
                                                "required": ["n"], "additionalProperties": False}},
        {"type": "const_string", "value": "</call>"}]}}
    out = engine.generate(input_ids=[5, 6], sampling_params={"max_new_tokens": 60, "temperature": 1.0,
                                                             "sampling_seed": 2, "structural_tag": json.dumps(tag)})
    assert out["meta_info"]["finish_reason"]["type"] == "stop", out
    match = re.fullmatch(r"<call>(.*)</call>", out["text"], re.S)
    assert match, out["text"]
    assert set(json.loads(match.group(1))) == {"n"}
    assert not re.search(r"\s\s", match.group(1))  # whitespace in tag JSON is bounded (1 by default)


def test_llguidance_backend_with_jump_forward(tiny_llama):
    schema = {"type": "object", "properties": {"answer_value": {"type": "integer", "minimum": 0, "maximum": 99},
                                               "is_final": {"type": "boolean"}},
              "required": ["answer_value", "is_final"], "additionalProperties": False}
    with Engine(model_path=tiny_llama, device="cpu", random_seed=0, context_length=512,
                grammar_backend="llguidance", enable_jump_forward=True) as e:
        outs = e.generate(input_ids=[[5, 6, 7]] * 3, sampling_params=[
            {"max_new_tokens": 80, "temperature": 1.0, "sampling_seed": 1, "json_schema": json.dumps(schema)},
            {"max_new_tokens": 40, "temperature": 1.0, "sampling_seed": 2, "regex": r"(yes|no) [0-9]{3}"},
            {"max_new_tokens": 40, "temperature": 1.0, "sampling_seed": 3, "structural_tag": json.dumps(
                {"type": "structural_tag", "format": {"type": "const_string", "value": "x"}})}])
        info = e.get_server_info()
    assert outs[0]["meta_info"]["finish_reason"]["type"] == "stop", outs[0]
    jsonschema.validate(json.loads(outs[0]["text"]), schema)
    assert re.fullmatch(r"(yes|no) [0-9]{3}", outs[1]["text"])
    reason = outs[2]["meta_info"]["finish_reason"]
    assert reason["type"] == "abort" and reason["status_code"] == 400 and "xgrammar" in reason["message"]
    assert info["jump_forward_steps_saved"] > 0
