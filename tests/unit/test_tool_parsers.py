"""Tool-call and reasoning parsers, and the streaming assembler, on hand-written model outputs."""

from __future__ import annotations

import json

import pytest

from app.structured.assembler import OutputShaper
from app.structured.json_scan import scan_calls, value_end
from app.structured.reasoning import make_reasoning_parser
from app.structured.tool_parsers import NamedParser, RequiredParser, make_parser, parser_for_template

QWEN = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>')
LLAMA = '{"name": "get_weather", "parameters": {"city": "Paris \\"Nord\\"", "n": 3}}; {"name": "get_time", "parameters": {}}'
MISTRAL = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]'


def _calls(msg: dict) -> list[tuple[str, dict]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in msg.get("tool_calls", [])]


def _replay(shaper: OutputShaper, text: str, step: int = 1) -> dict:
    """Streams `text` in `step`-character increments; reassembles the message as a client does."""
    content, reasoning, calls = "", "", {}
    cuts = list(range(step, len(text), step)) + [len(text)]
    for n, cut in enumerate(cuts):
        for delta in shaper.deltas(text[:cut], final=n == len(cuts) - 1):
            assert len(delta) == 1, delta  # one kind of delta per chunk
            content += delta.get("content", "")
            reasoning += delta.get("reasoning_content", "")
            for tc in delta.get("tool_calls", []):
                if "id" in tc:  # the opening delta: id, type, name, empty arguments
                    assert tc["index"] not in calls and tc["type"] == "function"
                    assert tc["function"]["arguments"] == ""
                    calls[tc["index"]] = {"id": tc["id"], "name": tc["function"]["name"], "arguments": ""}
                else:
                    assert set(tc["function"]) == {"arguments"}
                    calls[tc["index"]]["arguments"] += tc["function"]["arguments"]
    return {"content": content, "reasoning": reasoning, "calls": [calls[k] for k in sorted(calls)]}


@pytest.mark.parametrize(("parser", "text", "content"), [
    ("qwen", QWEN, "Let me check.\n"), ("hermes", QWEN, "Let me check.\n"), ("llama3", LLAMA, None),
    ("llama3", "<|python_tag|>" + LLAMA, None), ("mistral", MISTRAL, None)])
def test_formats_parse_and_stream_alike(parser, text, content) -> None:
    msg = OutputShaper(tools=make_parser(parser)).message(text)
    assert msg["content"] == content
    assert _calls(msg)[0] == ("get_weather", json.loads(msg["tool_calls"][0]["function"]["arguments"]))
    assert [name for name, _ in _calls(msg)] == ["get_weather", "get_time"]
    assert _calls(msg)[1][1] == {}
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in msg["tool_calls"])
    for step in (1, 3, 7):
        streamed = _replay(OutputShaper(tools=make_parser(parser)), text, step)
        assert [(c["name"], c["arguments"]) for c in streamed["calls"]] == \
            [(c["function"]["name"], c["function"]["arguments"]) for c in msg["tool_calls"]]
        assert streamed["content"].strip() == (content or "").strip()
    # Arguments stream in fragments, not only as one piece at the end.
    shaper = OutputShaper(tools=make_parser(parser))
    cut = text.index('"Paris') + 3
    pieces = shaper.deltas(text[:cut], final=False)
    assert any(tc["function"].get("arguments") for d in pieces for tc in d.get("tool_calls", []))


def test_plain_text_and_broken_calls_stay_content() -> None:
    for parser, text in [("qwen", "Just an answer, no tools."), ("qwen", "<tool_call>\n{not json"),
                         ("llama3", "{\"answer\": 42}"), ("llama3", "Hello <|python"), ("mistral", "[TOOL_CALLS]oops")]:
        msg = OutputShaper(tools=make_parser(parser)).message(text)
        assert msg == {"role": "assistant", "content": text}, parser
        streamed = _replay(OutputShaper(tools=make_parser(parser)), text, 2)
        assert streamed["content"] == text and not streamed["calls"]


def test_partial_marker_is_held_back_while_streaming() -> None:
    shaper = OutputShaper(tools=make_parser("qwen"))
    assert shaper.deltas("Hi <tool_", final=False) == [{"content": "Hi "}]
    assert shaper.deltas("Hi <tool_x", final=False) == [{"content": "<tool_x"}]


def test_arguments_as_json_string_are_decoded() -> None:
    text = '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>'
    msg = OutputShaper(tools=make_parser("qwen")).message(text)
    assert _calls(msg) == [("f", {"a": 1})]
    assert _replay(OutputShaper(tools=make_parser("qwen")), text)["calls"][0]["arguments"] == '{"a": 1}'


def test_required_and_named_outputs() -> None:
    text = '[{"name": "get_weather", "parameters": {"city": "Oslo"}}, {"name": "get_time", "parameters": {}}]'
    msg = OutputShaper(tools=RequiredParser()).message(text)
    assert msg["content"] is None and _calls(msg) == [("get_weather", {"city": "Oslo"}), ("get_time", {})]
    assert [c["arguments"] for c in _replay(OutputShaper(tools=RequiredParser()), text, 2)["calls"]] == \
        ['{"city": "Oslo"}', "{}"]
    named = OutputShaper(tools=NamedParser("get_time")).message("{}")
    assert _calls(named) == [("get_time", {})]
    streamed = _replay(OutputShaper(tools=NamedParser("get_weather")), '{"city": "Rome"}', 4)
    assert streamed["calls"][0]["name"] == "get_weather" and streamed["calls"][0]["arguments"] == '{"city": "Rome"}'


@pytest.mark.parametrize(("name", "prompt", "text", "reasoning", "answer"), [
    ("qwen3", "", "<think>\nLet me think.\n</think>\n\nThe answer.", "Let me think.\n", "The answer."),
    ("qwen3", "", "No thinking here.", "", "No thinking here."),
    ("qwen3", "<|im_start|>assistant\n<think>\n", "hmm</think>ok", "hmm", "ok"),
    ("deepseek-r1", "", "Reasoning first.</think>\n\nAnswer.", "Reasoning first.", "Answer."),
    ("deepseek-r1", "", "<think>R</think>A", "R", "A"),
    ("deepseek-r1", "", "never ends", "never ends", ""),
])
def test_reasoning_split(name, prompt, text, reasoning, answer) -> None:
    parser = make_reasoning_parser(name, prompt)
    assert parser.split(text, final=True) == (reasoning, answer)
    msg = OutputShaper(reasoning=parser).message(text)
    assert msg["reasoning_content"] == (reasoning or None) and msg["content"] == answer
    for step in (1, 5):
        streamed = _replay(OutputShaper(reasoning=make_reasoning_parser(name, prompt)), text, step)
        assert (streamed["reasoning"], streamed["content"]) == (reasoning, answer)


def test_reasoning_then_tool_call() -> None:
    text = '<think>I need the weather.</think>\n<tool_call>\n{"name": "w", "arguments": {"c": "X"}}\n</tool_call>'
    shaper = OutputShaper(make_reasoning_parser("qwen3"), make_parser("qwen"))
    msg = shaper.message(text)
    assert msg["reasoning_content"] == "I need the weather." and msg["content"] is None
    assert _calls(msg) == [("w", {"c": "X"})]
    streamed = _replay(OutputShaper(make_reasoning_parser("qwen3"), make_parser("qwen")), text, 3)
    assert streamed["reasoning"] == "I need the weather." and streamed["calls"][0]["arguments"] == '{"c": "X"}'


def test_scanner_edges() -> None:
    assert value_end('"a\\"b" ,', 0) == 6 and value_end('{"a": "}"}', 0) == 10 and value_end("12", 0) == -1
    calls = scan_calls('{"name": "f", "arguments": {"x": "{', 0, ("arguments",))
    assert calls[0].name == "f" and calls[0].args == '{"x": "{' and not calls[0].args_done


def test_default_parser_from_template() -> None:
    assert parser_for_template("{{ '<tool_call>' }}") == "qwen"
    assert parser_for_template("[TOOL_CALLS]") == "mistral"
    assert parser_for_template("<|python_tag|>") == "llama3"
    assert parser_for_template("{{ m['content'] }}") is None
    with pytest.raises(ValueError):
        make_parser("nope")


def test_single_call_when_parallel_calls_are_off() -> None:
    msg = OutputShaper(tools=make_parser("qwen"), max_calls=1).message(QWEN)
    assert [name for name, _ in _calls(msg)] == ["get_weather"]
    streamed = _replay(OutputShaper(tools=make_parser("qwen"), max_calls=1), QWEN, 5)
    assert [c["name"] for c in streamed["calls"]] == ["get_weather"]


def test_special_tokens_kept_for_the_marker_are_dropped_from_the_answer(tiny_llama) -> None:
    from transformers import AutoTokenizer

    from app.structured.chat_plan import ChatStructure, special_token_texts

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    assert "</s>" in special_token_texts(tok) and "<|end|>" in special_token_texts(tok)
    shaper = ChatStructure(None, None, make_parser("llama3"), None).shaper("", tok)
    msg = shaper.message('<|python_tag|>{"name": "f", "parameters": {}}<|end|></s>')
    assert _calls(msg) == [("f", {})] and msg["content"] is None
    assert ChatStructure(None, None, make_parser("mistral"), None).shaper("", tok).message("Hi.</s>")["content"] == "Hi."
