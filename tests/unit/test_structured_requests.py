"""Request translation: response_format / extras / tools → one engine grammar, and the 400s."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from app.errors import APIError
from app.openai_protocol import ChatCompletionRequest, CompletionRequest
from app.structured.chat_plan import plan_chat, template_messages
from app.structured.constraints import request_grammar, required_tools_schema

xgr = pytest.importorskip("xgrammar")

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"$ref": "#/$defs/City"}}, "required": ["city"],
    "additionalProperties": False,
    "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
                       "additionalProperties": False}}}}}
TIME = {"type": "function", "function": {"name": "get_time"}}


def chat(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **kw)


def accepts(grammar, text: str) -> bool:
    compiled = {"json_schema": xgr.Grammar.from_json_schema, "regex": xgr.Grammar.from_regex,
                "ebnf": xgr.Grammar.from_ebnf, "structural_tag": xgr.Grammar.from_structural_tag}[grammar.kind]
    return xgr.testing._is_grammar_accept_string(compiled(grammar.spec), text)


def err(fn) -> APIError:
    with pytest.raises(APIError) as info:
        fn()
    assert info.value.status == 400
    return info.value


def test_response_formats() -> None:
    assert request_grammar(chat(response_format={"type": "text"})) is None
    g = request_grammar(chat(response_format={"type": "json_object"}))
    assert accepts(g, '{"any": [1, "thing"]}') and not accepts(g, "[1]")
    g = request_grammar(chat(response_format={"type": "json_object", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}))
    assert accepts(g, '{"a": 1}') and not accepts(g, '{"b": 1}')

    class Inner(BaseModel):
        x: int

    class Outer(BaseModel):
        inner: Inner
        note: str | None

    schema = Outer.model_json_schema()
    g = request_grammar(chat(response_format={"type": "json_schema", "json_schema": {
        "name": "o", "schema": schema, "strict": True}}))
    assert g.kind == "json_schema" and g.param == "response_format.json_schema.schema"
    assert accepts(g, '{"inner": {"x": 3}, "note": null}') and not accepts(g, '{"inner": {"x": "3"}, "note": null}')
    with pytest.raises(ValidationError):
        chat(response_format={"type": "json_schema"})


def test_extras_and_conflicts() -> None:
    assert request_grammar(CompletionRequest(model="m", prompt="p", regex="[ab]+")).kind == "regex"
    assert request_grammar(CompletionRequest(model="m", prompt="p", ebnf='root ::= "x"')).kind == "ebnf"
    assert request_grammar(CompletionRequest(model="m", prompt="p", response_format={"type": "json_object"})).param \
        == "response_format"
    e = err(lambda: request_grammar(chat(regex="a", json_schema='{"type": "object"}')))
    assert e.param == "json_schema" and "'regex'" in e.message
    e = err(lambda: request_grammar(chat(regex="a", response_format={"type": "json_object"})))
    assert e.param == "response_format"
    e = err(lambda: plan_chat(chat(response_format={"type": "json_object"}, tools=[TIME], tool_choice="required"),
                              None, None, None))
    assert e.param == "response_format" and "required" in e.message


def test_required_schema_accepts_exactly_valid_calls() -> None:
    body = chat(tools=[WEATHER, TIME], tool_choice="required")
    plan = plan_chat(body, None, None, None)
    g = plan.grammar
    assert g.param == "tool_choice"
    assert accepts(g, '[{"name": "get_weather", "parameters": {"city": {"name": "Oslo"}}}]')
    assert accepts(g, '[{"name": "get_time", "parameters": {}}, {"name": "get_time", "parameters": {}}]')
    assert not accepts(g, '[]')
    assert not accepts(g, '[{"name": "get_weather", "parameters": {"city": "Oslo"}}]')
    assert not accepts(g, '[{"name": "nope", "parameters": {}}]')
    single = required_tools_schema(body.tools, parallel=False)
    assert single["maxItems"] == 1
    assert plan.tool_parser.name == "required" and plan.tools[0]["function"]["name"] == "get_weather"


def test_named_and_auto_and_none() -> None:
    named = plan_chat(chat(tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}}),
                      None, None, None)
    assert accepts(named.grammar, "{}") and not accepts(named.grammar, '{"x": 1}')
    auto = plan_chat(chat(tools=[WEATHER]), None, None, "{{ '<tool_call>' }}")
    assert auto.grammar.kind == "structural_tag" and auto.tool_parser.name == "qwen"
    assert plan_chat(chat(tools=[WEATHER]), "llama3", None, None).tool_parser.name == "llama3"
    assert plan_chat(chat(tools=[WEATHER]), None, None, "plain").tool_parser is None
    none = plan_chat(chat(tools=[WEATHER], tool_choice="none"), "qwen", None, None)
    assert none.tool_parser is None and none.tools is None


def test_tool_errors() -> None:
    e = err(lambda: plan_chat(chat(tool_choice="required"), None, None, None))
    assert e.param == "tool_choice"
    e = err(lambda: plan_chat(chat(tools=[TIME], tool_choice={"type": "function", "function": {"name": "x"}}),
                              None, None, None))
    assert e.param == "tool_choice" and "'x'" in e.message
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
    e = err(lambda: plan_chat(chat(tools=[bad]), None, None, None))
    assert e.param == "tools[0].function.parameters"
    e = err(lambda: plan_chat(chat(tools=[TIME, TIME]), None, None, None))
    assert e.param == "tools[1].function.name"
    with pytest.raises(ValidationError):
        chat(tools=[{"type": "function", "function": {"name": "has space"}}])


def test_grammar_starts_after_reasoning() -> None:
    plan = plan_chat(chat(response_format={"type": "json_object"}), None, "qwen3", None)
    g = plan.grammar
    assert g.kind == "structural_tag" and g.param == "response_format"
    assert accepts(g, '<think>\nfree {text\n</think>\n\n{"a": 1}')
    assert not accepts(g, '{"a": 1}') and not accepts(g, '<think>x</think>not json')
    # The output then always has the shape `reasoning</think>answer`, with or without an opening <think>.
    msg = plan.shaper("").message('free text</think>\n{"a": 1}')
    assert (msg["reasoning_content"], msg["content"]) == ("free text", '{"a": 1}')
    whole = plan_chat(chat(response_format={"type": "json_object"}, separate_reasoning=False), None, "qwen3", None)
    assert whole.grammar.kind == "structural_tag" and whole.shaper("") is None
    off = plan_chat(chat(response_format={"type": "json_object"}, chat_template_kwargs={"enable_thinking": False}),
                    None, "qwen3", None)
    assert off.grammar.kind == "json_schema"


def test_history_messages_for_the_template() -> None:
    body = chat()
    body = ChatCompletionRequest(model="m", messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "X"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    msgs = template_messages(body.messages)
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == {"city": "X"} and msgs[1]["content"] == ""
    assert msgs[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    with pytest.raises(ValidationError):
        ChatCompletionRequest(model="m", messages=[{"role": "tool", "content": "x"}])
    assert json.loads(json.dumps(msgs))  # plain JSON for the template


def test_auto_calls_are_constrained_once_the_marker_appears() -> None:
    plan = plan_chat(chat(tools=[WEATHER, TIME]), "qwen", None, None)
    g = plan.grammar
    assert g.kind == "structural_tag"
    assert accepts(g, "Just text, no call.")
    assert accepts(g, 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": {"name": "Oslo"}}}\n</tool_call>')
    assert accepts(g, '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
    assert not accepts(g, '<tool_call>\n{"name": "get_time", "arguments": {"x": 1}}\n</tool_call>')
    assert not accepts(g, '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>')
    assert plan_chat(chat(tools=[WEATHER]), "qwen", None, None, constrain_auto=False).grammar is None
    assert plan_chat(chat(tools=[WEATHER]), "llama3", None, None).grammar is None  # special-token marker
    # A grammar the client asked for wins; the call is then parsed, not constrained.
    assert plan_chat(chat(tools=[WEATHER], regex="x"), "qwen", None, None).grammar.kind == "regex"


# A Qwen-2.5-style template, cut down: tools in the system turn, calls as <tool_call> JSON, results as a user turn.
QWEN_LIKE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    "{% for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_tools_and_tool_history_render_through_the_template(tiny_llama) -> None:
    from transformers import AutoTokenizer

    from app.chat_template import render_chat_text

    body = ChatCompletionRequest(model="m", tools=[WEATHER], messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "X"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    plan = plan_chat(body, None, None, QWEN_LIKE)
    text = render_chat_text(AutoTokenizer.from_pretrained(tiny_llama), QWEN_LIKE, template_messages(body.messages),
                            tools=plan.tools)
    assert '"name": "get_weather"' in text.split("<|im_end|>")[0]  # the tool list, in the system turn
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "X"}}\n</tool_call>' in text
    assert "<tool_response>\nsunny\n</tool_response>" in text and text.endswith("<|im_start|>assistant\n")
    assert plan.tool_parser.name == "qwen"  # the default parser follows the template
