"""Structured output and tool calls on the real server with a tiny random-weight model, through the
openai SDK: every valid output comes from the grammar alone (the model knows nothing)."""

from __future__ import annotations

import json
import re
from typing import Annotated

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.app.server_proc import ServerProc

pytest.importorskip("xgrammar")


class Address(BaseModel):
    city: str = Field(max_length=6)
    zip_code: str | None = Field(max_length=5)


class Person(BaseModel):
    name: str = Field(max_length=8)
    age: int = Field(ge=0, le=120)
    home: Address
    tags: list[Annotated[str, Field(max_length=5)]] = Field(max_length=2)


class GetWeather(BaseModel):
    city: str = Field(max_length=8)
    unit: str = Field(json_schema_extra={"enum": ["c", "f"]})


class GetTime(BaseModel):
    pass


TOOLS = [openai.pydantic_function_tool(GetWeather, name="get_weather"),
         openai.pydantic_function_tool(GetTime, name="get_time")]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def qwen_server(tiny_llama, tmp_path_factory) -> ServerProc:
    """`--tool-call-parser qwen`: auto tool calls are read from `<tool_call>` blocks."""
    proc = ServerProc(tiny_llama, tmp_path_factory.mktemp("structured") / "server.log",
                      "--tool-call-parser", "qwen").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sdk(qwen_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=qwen_server.base_url + "/v1", api_key="x", max_retries=0, timeout=120)


def test_parse_nested_pydantic_model(sdk, tiny_llama) -> None:
    for seed in (1,):
        out = sdk.chat.completions.parse(model=tiny_llama, messages=ASK, response_format=Person, max_tokens=160,
                                         temperature=1.0, seed=seed)
        assert out.choices[0].finish_reason == "stop"
        person = out.choices[0].message.parsed
        assert isinstance(person, Person) and isinstance(person.home, Address)
        assert Person.model_validate_json(out.choices[0].message.content) == person


def test_json_object_and_extras(sdk, qwen_server, tiny_llama) -> None:
    out = sdk.chat.completions.create(model=tiny_llama, messages=ASK, max_tokens=24, temperature=0,
                                      response_format={"type": "json_object"})
    if out.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(out.choices[0].message.content), dict)
    else:  # an unbounded object may run out of tokens; what there is must still be an object's start
        assert out.choices[0].message.content.startswith("{")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    out = sdk.chat.completions.create(model=tiny_llama, messages=ASK, max_tokens=16, temperature=0,
                                      response_format={"type": "json_object", "schema": schema})
    assert set(json.loads(out.choices[0].message.content)) == {"ok"}
    out = sdk.chat.completions.create(model=tiny_llama, messages=ASK, max_tokens=16, temperature=0,
                                      extra_body={"json_schema": json.dumps(schema)})
    assert set(json.loads(out.choices[0].message.content)) == {"ok"}
    pattern = r"(yes|no)-[0-9]{3}"
    out = sdk.completions.create(model=tiny_llama, prompt="Answer:", max_tokens=16, temperature=0,
                                 extra_body={"regex": pattern})
    assert re.fullmatch(pattern, out.choices[0].text)
    out = sdk.completions.create(model=tiny_llama, prompt="Answer:", max_tokens=16, temperature=0,
                                 extra_body={"ebnf": 'root ::= "v=" [0-9] [0-9]'})
    assert re.fullmatch(r"v=[0-9]{2}", out.choices[0].text)


def test_required_and_named_tool_calls(sdk, tiny_llama) -> None:
    out = sdk.chat.completions.parse(model=tiny_llama, messages=ASK, tools=TOOLS, tool_choice="required",
                                     max_tokens=120, temperature=1.0, seed=3)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        expected = {"get_weather": GetWeather, "get_time": GetTime}[call.function.name]
        assert isinstance(call.function.parsed_arguments, expected)
    out = sdk.chat.completions.parse(model=tiny_llama, messages=ASK, tools=TOOLS, max_tokens=40, temperature=0,
                                     tool_choice={"type": "function", "function": {"name": "get_time"}})
    call = out.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("get_time", "{}")
    assert out.choices[0].finish_reason == "tool_calls"


def test_streamed_required_calls_reassemble(sdk, tiny_llama) -> None:
    kwargs = dict(model=tiny_llama, messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                  max_tokens=120, temperature=1.0, seed=5)
    with sdk.chat.completions.stream(**kwargs) as stream:
        chunks = [e.chunk for e in stream if e.type == "chunk"]
        final = stream.get_final_completion()
    msg = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls" and len(msg.tool_calls) == 1
    call = msg.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, {"get_weather": GetWeather, "get_time": GetTime}[
        call.function.name])
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id == call.id and deltas[0].function.name == call.function.name
    assert deltas[0].function.arguments == ""
    assert "".join(d.function.arguments or "" for d in deltas[1:]) == call.function.arguments
    # The same request without streaming gives the same call (same seed).
    plain = sdk.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    assert (plain.function.name, plain.function.arguments) == (call.function.name, call.function.arguments)


def test_auto_parses_the_qwen_format(sdk, tiny_llama) -> None:
    # The tiny model knows no format: a regex makes it write Qwen's; the parser must read it back.
    forced = r'Checking\.\n<tool_call>\n\{"name": "get_weather", "arguments": \{"city": "(Paris|Rome)", ' \
             r'"unit": "c"\}\}\n</tool_call>'
    out = sdk.chat.completions.create(model=tiny_llama, messages=ASK, tools=TOOLS, max_tokens=200, temperature=0,
                                      extra_body={"regex": forced})
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking.\n"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments)["city"] in ("Paris", "Rome")
    # Without tools the same text is just text.
    out = sdk.chat.completions.create(model=tiny_llama, messages=ASK, max_tokens=200, temperature=0,
                                      extra_body={"regex": forced})
    assert out.choices[0].finish_reason == "stop" and "<tool_call>" in out.choices[0].message.content


def test_structured_400s(sdk, qwen_server, tiny_llama) -> None:
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"a": {"not": {"type": "string"}}}}}}},
         "response_format.json_schema.schema", "'not'"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}}}]},
         "tools[0].function.parameters", "uniqueItems"),
        ({"tool_choice": "required"}, "tool_choice", "required"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "nope"),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format",
         "together"),
        ({"extra_body": {"regex": "(a"}}, "regex", "regex"),
    ]
    for extra, param, fragment in cases:
        with pytest.raises(openai.BadRequestError) as err:
            sdk.chat.completions.create(model=tiny_llama, messages=ASK, max_tokens=4, **extra)
        body = err.value.body
        assert body["param"] == param and fragment in body["message"], (extra, body)
    assert httpx.get(qwen_server.base_url + "/health").status_code == 200


@pytest.fixture(scope="module")
def think_model(tiny_llama, tmp_path_factory) -> str:
    """The tiny Llama with `<think>` / `</think>` as single tokens, so a logit bias can end its reasoning."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = str(tmp_path_factory.mktemp("think_model"))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.add_tokens(["<think>", "</think>"])
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model.resize_token_embeddings(len(tok))
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


def test_llama3_format_and_reasoning(think_model, tmp_path_factory) -> None:
    """A second server: `--tool-call-parser llama3 --reasoning-parser qwen3`."""
    proc = ServerProc(think_model, tmp_path_factory.mktemp("structured") / "llama3.log",
                      "--tool-call-parser", "llama3", "--reasoning-parser", "qwen3").start()
    try:
        sdk = openai.OpenAI(base_url=proc.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
        model = think_model
        no_think = {"chat_template_kwargs": {"enable_thinking": False}}
        forced = r'\{"name": "get_weather", "parameters": \{"city": "Oslo", "unit": "f"\}\}'
        out = sdk.chat.completions.create(model=model, messages=ASK, tools=TOOLS, max_tokens=200, temperature=0,
                                          extra_body={"regex": forced, **no_think})
        call = out.choices[0].message.tool_calls[0]
        assert out.choices[0].finish_reason == "tool_calls" and out.choices[0].message.content is None
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather",
                                                                             {"city": "Oslo", "unit": "f"})
        # Reasoning: the text inside <think> ... </think> becomes reasoning_content, in messages and deltas.
        thinking = r"<think>\n[a-z]{1,8}\n</think>\n\n(yes|no)"
        kwargs = dict(model=model, messages=ASK, max_tokens=40, temperature=0,
                      extra_body={"regex": thinking, **no_think})
        msg = sdk.chat.completions.create(**kwargs).choices[0].message
        assert re.fullmatch(r"[a-z]{1,8}\n", msg.model_extra["reasoning_content"]) and msg.content in ("yes", "no")
        reasoning, content = "", ""
        for chunk in sdk.chat.completions.create(**kwargs, stream=True):
            delta = chunk.choices[0].delta
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            content += delta.content or ""
        assert (reasoning, content) == (msg.model_extra["reasoning_content"], msg.content)
        # With thinking on, the schema applies after </think> only: free reasoning, then the JSON. The bias
        # makes the random model close its reasoning soon; the grammar alone makes the answer valid.
        end_id = httpx.post(proc.base_url + "/v1/tokenize", json={"prompt": "</think>",
                                                                   "add_special_tokens": False}).json()["tokens"]
        assert len(end_id) == 1
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
                  "required": ["n"], "additionalProperties": False}
        out = sdk.chat.completions.create(
            model=model, messages=ASK, max_tokens=120, temperature=1.0, seed=0, logit_bias={str(end_id[0]): 6},
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
        msg = out.choices[0].message
        assert out.choices[0].finish_reason == "stop", msg
        # Had the schema applied from the first token, there would be no </think> and no content at all.
        assert set(json.loads(msg.content)) == {"n"} and "</think>" not in (msg.model_extra["reasoning_content"] or "")
    finally:
        proc.stop()
