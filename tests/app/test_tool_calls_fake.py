"""Tool calls and reasoning through HTTP and the openai SDK, on the fake engine scripted to "generate"
a model's own output (fast: no model runs; the real-engine tests are in test_structured_server.py)."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.app.app_harness import running_app
from tests.app.fake_engine import FakeBehaviour

THINK = "<think>\nThe user wants weather.\n</think>\n\n"
CALLS = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')


class GetWeather(BaseModel):
    city: str
    unit: str


class GetTime(BaseModel):
    pass


TOOLS = [openai.pydantic_function_tool(GetWeather, name="get_weather"),
         openai.pydantic_function_tool(GetTime, name="get_time")]
MESSAGES = [{"role": "user", "content": "weather in Paris?"}]


@pytest.fixture(scope="module")
def harness(tiny_llama):
    # No grammar backend: `auto` runs unconstrained (the fake engine could not apply a grammar anyway).
    with running_app(tiny_llama, FakeBehaviour(stop_after_script=True), tool_call_parser="qwen",
                     reasoning_parser="qwen3", grammar_backend="none") as h:
        yield h


def _script(h, text: str) -> int:
    h.behaviour.script = h.clients[-1].tokenizer(text, add_special_tokens=False)["input_ids"]
    return len(h.behaviour.script) + 4


@pytest.fixture(scope="module")
def sdk(harness) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=harness.http, max_retries=0)


def test_tool_calls_with_reasoning(harness, sdk, tiny_llama) -> None:
    budget = _script(harness, THINK + CALLS)
    out = sdk.chat.completions.parse(model=tiny_llama, messages=MESSAGES, tools=TOOLS, max_tokens=budget)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    msg = choice.message
    assert msg.content is None
    assert msg.model_extra["reasoning_content"] == "The user wants weather.\n"
    assert [c.function.name for c in msg.tool_calls] == ["get_weather", "get_time"]
    assert msg.tool_calls[0].function.parsed_arguments == GetWeather(city="Paris", unit="c")
    assert json.loads(msg.tool_calls[1].function.arguments) == {}
    assert len({c.id for c in msg.tool_calls}) == 2
    # The SDK's own message object goes back into the history as it is.
    _script(harness, "Done.")
    history = [*MESSAGES, msg, {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18 C"}]
    again = sdk.chat.completions.create(model=tiny_llama, messages=history, tools=TOOLS, max_tokens=budget)
    assert again.choices[0].message.content == "Done."


def test_streamed_tool_calls_reassemble_with_the_sdk_helper(harness, sdk, tiny_llama) -> None:
    budget = _script(harness, THINK + CALLS)
    deltas, reasoning = [], ""
    with sdk.chat.completions.stream(model=tiny_llama, messages=MESSAGES, tools=TOOLS, max_tokens=budget) as stream:
        for event in stream:
            if event.type == "chunk" and event.chunk.choices:
                delta = event.chunk.choices[0].delta
                reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
                deltas.extend(delta.tool_calls or [])
        final = stream.get_final_completion()
    msg = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert reasoning == "The user wants weather.\n"
    assert [c.function.name for c in msg.tool_calls] == ["get_weather", "get_time"]
    assert msg.tool_calls[0].function.parsed_arguments == GetWeather(city="Paris", unit="c")
    # OpenAI's shape: the first delta of a call has id, type, name and arguments ""; then fragments only.
    first = [d for d in deltas if d.id]
    assert [(d.index, d.type, d.function.name, d.function.arguments) for d in first] == [
        (0, "function", "get_weather", ""), (1, "function", "get_time", "")]
    fragments = [d for d in deltas if not d.id]
    assert all(d.function.name is None for d in fragments)
    assert len([d for d in fragments if d.index == 0]) > 1  # arguments arrive in pieces
    assert "".join(d.function.arguments for d in fragments if d.index == 0) == msg.tool_calls[0].function.arguments


def test_plain_answer_and_history_roundtrip(harness, sdk, tiny_llama) -> None:
    budget = _script(harness, "It is sunny.")
    history = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    out = sdk.chat.completions.create(model=tiny_llama, messages=history, tools=TOOLS, max_tokens=budget)
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content == "It is sunny." and not out.choices[0].message.tool_calls
    # The tool result reached the prompt through the chat template.
    assert out.usage.prompt_tokens > sdk.chat.completions.create(
        model=tiny_llama, messages=MESSAGES, tools=TOOLS, max_tokens=budget).usage.prompt_tokens


def test_tool_errors_are_openai_400s(sdk, tiny_llama) -> None:
    cases = [({"tool_choice": "required"}, "tool_choice"),
             ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
             ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
              "tools[0].function.parameters"),
             ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
              "response_format")]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            sdk.chat.completions.create(model=tiny_llama, messages=MESSAGES, max_tokens=4, **extra)
        assert err.value.status_code == 400 and err.value.body["param"] == param, (extra, err.value.body)
