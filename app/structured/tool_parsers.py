"""Tool-call parsers: the model's own format (`--tool-call-parser`) and the constrained formats.

Every parser maps the cumulative output text to a `ToolSnap` (content before the calls, the calls so
far). `final=False` holds back a possible start of a marker at the end of the text, so streamed content
never contains half a marker; `final=True` with no well-formed call gives the whole text back as content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from app.structured.json_scan import CallSnap, scan_calls
from engine.args import TOOL_CALL_PARSERS


@dataclass
class ToolSnap:
    content: str
    calls: list[CallSnap] = field(default_factory=list)


def partial_marker_at_end(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def valid_call(call: CallSnap) -> bool:
    if not (call.done and call.name and call.args_done):
        return False
    try:
        return isinstance(json.loads(call.args), dict)
    except ValueError:
        return False


def _finish(text: str, snap: ToolSnap, final: bool) -> ToolSnap:
    if final and not any(valid_call(c) for c in snap.calls):
        return ToolSnap(text)  # not a tool call after all: all of it is the answer
    return snap


class MarkerParser:
    """Calls follow a marker string: `<tool_call>{...}</tool_call>` (Qwen 2.5/3, Hermes),
    `[TOOL_CALLS][{...}, ...]` (Mistral)."""

    arg_keys: tuple[str, ...] = ("arguments", "parameters")

    def __init__(self, name: str, marker: str, skip_special_tokens: bool = True,
                 constrain: tuple[str, str] | None = None) -> None:
        self.name = name
        self.marker = marker
        # (text between the marker and the call object, text after it) when the marker is plain text, so
        # `tool_choice: auto` can constrain a call once the marker appears; None for a special-token marker.
        self.constrain = constrain
        # Mistral's marker is a special token: it is only in the text when special tokens are kept.
        self.skip_special_tokens = skip_special_tokens

    def snapshot(self, text: str, final: bool) -> ToolSnap:
        start = text.find(self.marker)
        if start < 0:
            hold = 0 if final else partial_marker_at_end(text, self.marker)
            return ToolSnap(text[:len(text) - hold])
        return _finish(text, ToolSnap(text[:start], scan_calls(text, start + len(self.marker), self.arg_keys)),
                       final)


class Llama3Parser:
    """Llama 3.1/3.2 JSON tool calls: the output is `{"name": ..., "parameters": {...}}` (several
    separated by `;`), optionally after the `<|python_tag|>` token."""

    name = "llama3"
    constrain: tuple[str, str] | None = None
    arg_keys = ("parameters", "arguments")
    marker = "<|python_tag|>"
    skip_special_tokens = False

    def snapshot(self, text: str, final: bool) -> ToolSnap:
        start = text.find(self.marker)
        if start >= 0:
            calls = scan_calls(text, start + len(self.marker), self.arg_keys)
            return _finish(text, ToolSnap(text[:start], calls), final)
        stripped = text.lstrip()
        if stripped.startswith("{"):
            return _finish(text, ToolSnap("", scan_calls(text, 0, self.arg_keys)), final)
        if not final and (not stripped or self.marker.startswith(stripped)):
            return ToolSnap("")  # may still become a call
        hold = 0 if final else partial_marker_at_end(text, self.marker)
        return ToolSnap(text[:len(text) - hold])


class RequiredParser:
    """`tool_choice: "required"`: the grammar made the output a JSON array of
    `{"name": ..., "parameters": {...}}`."""

    name = "required"
    arg_keys = ("parameters",)
    skip_special_tokens = True

    def snapshot(self, text: str, final: bool) -> ToolSnap:
        return ToolSnap("", scan_calls(text, 0, self.arg_keys))


class NamedParser:
    """A named `tool_choice`: the grammar made the whole output the arguments object."""

    skip_special_tokens = True

    def __init__(self, function: str) -> None:
        self.name = function

    def snapshot(self, text: str, final: bool) -> ToolSnap:
        body = text.lstrip()
        return ToolSnap("", [CallSnap(name=self.name, args=body, args_done=final, done=final)])


ToolParser = MarkerParser | Llama3Parser | RequiredParser | NamedParser


def make_parser(name: str) -> MarkerParser | Llama3Parser:
    if name in ("qwen", "hermes"):
        return MarkerParser(name, "<tool_call>", constrain=("\n", "\n</tool_call>"))
    if name == "mistral":
        return MarkerParser(name, "[TOOL_CALLS]", skip_special_tokens=False)
    if name == "llama3":
        return Llama3Parser()
    raise ValueError(f"unknown tool-call parser {name!r}; use one of {', '.join(TOOL_CALL_PARSERS)}")


def parser_for_template(template: str | None) -> str | None:
    """The default `--tool-call-parser`: the format the chat template itself writes tool calls in."""
    if not template:
        return None
    if "<tool_call>" in template:
        return "qwen"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or "ipython" in template:
        return "llama3"
    return None
