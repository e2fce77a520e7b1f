"""One engine grammar per request, from whichever OpenAI / SGLang field asked for it.

Sources: the extras `regex`, `ebnf`, `json_schema` (SGLang's spelling), `response_format`, and
`tool_choice` `required` / named. At most one may be given (400 naming both otherwise). With a reasoning
parser the grammar is wrapped in a structural tag that leaves the reasoning free and starts the grammar
after the end-of-reasoning marker, so a grammar never lands inside the thinking.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from app.errors import bad_request
from app.structured.protocol import NamedToolChoice, Tool

# A tool without `parameters` takes none: its arguments are always "{}".
EMPTY_PARAMS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
# Reasoning models put a blank line or two between the end marker and the answer.
_GAP_AFTER_REASONING = {"type": "regex", "pattern": "[ \\n]{0,4}"}


@dataclass(frozen=True)
class Grammar:
    kind: str  # json_schema | regex | ebnf | structural_tag (the engine's SamplingParams keys)
    spec: str
    param: str  # the request field it came from, for 400s

    def sampling_keys(self) -> dict[str, str]:
        return {self.kind: self.spec}


def check_grammar(grammar: Grammar) -> None:
    """400 naming the client's field for a spec the engine cannot enforce (before it is wrapped into a
    structural tag, whose pointers would mean nothing to the client)."""
    _check_spec(grammar.kind, grammar.spec, grammar.param)


@functools.lru_cache(maxsize=1024)
def _spec_problem(kind: str, spec: str) -> str | None:
    """The engine checker's verdict, cached: the same tools come with every request of a chat."""
    try:
        from engine.grammar.spec_check import check_grammar_spec
    except ImportError:  # an engine without grammar support rejects the key itself
        return None
    try:
        check_grammar_spec(kind, spec)
    except ValueError as exc:
        return str(exc)
    except ImportError:  # no xgrammar in this environment: the engine answers for the spec
        return None
    return None


def _check_spec(kind: str, spec: str, param: str) -> None:
    problem = _spec_problem(kind, spec)
    if problem is not None:
        raise bad_request(f"{param}: {problem}", param)


def tool_params(tool: Tool) -> dict[str, Any]:
    params = tool.function.parameters
    if params is None or params == {} or params == {"type": "object"} or params == {
            "type": "object", "properties": {}}:
        return dict(EMPTY_PARAMS)
    return params


def check_tools(tools: list[Tool] | None, choice: Any) -> None:
    """The 400s of a tools request that need no model: names, parameters schemas, tool_choice."""
    tools = tools or []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        name = tool.function.name
        if name in seen:
            raise bad_request(f"tools[{i}]: duplicate function name {name!r}", f"tools[{i}].function.name")
        seen.add(name)
        params = tool.function.parameters
        param = f"tools[{i}].function.parameters"
        if params is not None and params.get("type", "object") != "object":
            raise bad_request(f"{param}: a function's parameters must be a JSON schema of type 'object'", param)
        _check_spec("json_schema", json.dumps(tool_params(tool)), param)
    if choice == "required" and not tools:
        raise bad_request("tool_choice 'required' needs at least one tool in 'tools'", "tool_choice")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in seen:
        known = ", ".join(sorted(seen)) or "none"
        raise bad_request(f"tool_choice names the function {choice.function.name!r}, which is not in 'tools' "
                          f"(known: {known})", "tool_choice")


def _relocate_refs(node: Any, base: str) -> Any:
    """Rewrites local `$ref`s of a schema that moves from the root to `base` (a JSON pointer)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                out[key] = "#" + base + value[1:]
            else:
                out[key] = _relocate_refs(value, base)
        return out
    if isinstance(node, list):
        return [_relocate_refs(v, base) for v in node]
    return node


def required_tools_schema(tools: list[Tool], parallel: bool) -> dict[str, Any]:
    """A JSON array of `{"name": <tool>, "parameters": <its arguments>}`, one or more calls (exactly one
    when `parallel_tool_calls` is false). Each tool's schema moves under `$defs` so its own `$defs` /
    `$ref`s keep resolving."""
    defs: dict[str, Any] = {}
    branches = []
    for i, tool in enumerate(tools):
        key = f"tool_{i}"
        defs[key] = _relocate_refs(tool_params(tool), f"/$defs/{key}")
        branches.append({"type": "object", "properties": {"name": {"const": tool.function.name},
                                                          "parameters": {"$ref": f"#/$defs/{key}"}},
                         "required": ["name", "parameters"], "additionalProperties": False})
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": branches}, "$defs": defs}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def _response_format_grammar(fmt: Any) -> Grammar | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        schema = fmt.schema_ if fmt.schema_ is not None else {"type": "object"}
        return Grammar("json_schema", json.dumps(schema), "response_format.schema" if fmt.schema_ else
                       "response_format")
    spec = fmt.json_schema
    schema = spec.schema_ if spec.schema_ is not None else {"type": "object"}
    return Grammar("json_schema", json.dumps(schema), "response_format.json_schema.schema")


def _tools_grammar(body: Any) -> Grammar | None:
    choice = getattr(body, "tool_choice", None)
    tools = getattr(body, "tools", None) or []
    if isinstance(choice, NamedToolChoice):
        tool = next(t for t in tools if t.function.name == choice.function.name)
        return Grammar("json_schema", json.dumps(tool_params(tool)), "tool_choice")
    if choice == "required":
        return Grammar("json_schema", json.dumps(required_tools_schema(tools, body.parallel_tool_calls)),
                       "tool_choice")
    return None


def request_grammar(body: Any) -> Grammar | None:
    """The single grammar a chat or completions request asks for (400 when it asks for two)."""
    found: list[Grammar] = []
    for kind in ("regex", "ebnf", "json_schema"):
        value = getattr(body, kind, None)
        if isinstance(value, dict):  # SGLang's clients sometimes send the schema itself
            value = json.dumps(value)
        if value not in (None, ""):
            found.append(Grammar(kind, value, kind))
    fmt = _response_format_grammar(getattr(body, "response_format", None))
    if fmt is not None:
        found.append(fmt)
    tools = _tools_grammar(body)
    if tools is not None:
        found.append(tools)
    if len(found) > 1:
        a, b = found[0].param.split(".")[0], found[1].param.split(".")[0]
        what = f"tool_choice {_choice_text(body.tool_choice)}" if b == "tool_choice" else b
        raise bad_request(f"'{a}' and {what!r} cannot be used together: each constrains the whole output",
                          a if b == "tool_choice" else b)
    if not found:
        return None
    check_grammar(found[0])  # here, so the 400 names the field the client used
    return found[0]


def _choice_text(choice: Any) -> str:
    return "named" if isinstance(choice, NamedToolChoice) else str(choice)


def _as_format(grammar: Grammar) -> dict[str, Any]:
    if grammar.kind == "json_schema":
        return {"type": "json_schema", "json_schema": json.loads(grammar.spec)}
    if grammar.kind == "regex":
        return {"type": "regex", "pattern": grammar.spec}
    if grammar.kind == "ebnf":
        return {"type": "grammar", "grammar": grammar.spec}
    return json.loads(grammar.spec)["format"]


def auto_tools_grammar(tools: list[Tool], marker: str, call_prefix: str, call_suffix: str,
                       parallel: bool = True) -> Grammar:
    """`tool_choice: auto` in a text-marked format (`<tool_call>` of Qwen / Hermes): the text is free
    until the model writes the marker, then the call must name a listed tool with valid arguments
    (one call at most with `parallel_tool_calls: false`)."""
    tags = [{"type": "tag", "begin": f'{marker}{call_prefix}{{"name": {json.dumps(t.function.name)}, "arguments": ',
             "content": {"type": "json_schema", "json_schema": tool_params(t)}, "end": f"}}{call_suffix}"}
            for t in tools]
    tag = {"type": "structural_tag", "format": {"type": "triggered_tags", "triggers": [marker], "tags": tags,
                                                "stop_after_first": not parallel}}
    return Grammar("structural_tag", json.dumps(tag), "tools")


def after_reasoning(grammar: Grammar, end_marker: str) -> Grammar:
    """Free reasoning up to `end_marker`, then the grammar: one structural tag."""
    tag = {"type": "structural_tag", "format": {"type": "sequence", "elements": [
        {"type": "tag", "begin": "", "content": {"type": "any_text"}, "end": end_marker},
        _GAP_AFTER_REASONING, _as_format(grammar)]}}
    return Grammar("structural_tag", json.dumps(tag), grammar.param)
