"""Translation of one chat request's structured-output fields: which grammar the engine runs, what the
chat template sees (tools, tool-call history), and how each choice's output is parsed back."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from app.errors import bad_request
from app.structured.assembler import OutputShaper
from app.structured.constraints import (
    Grammar,
    after_reasoning,
    auto_tools_grammar,
    check_tools,
    request_grammar,
)
from app.structured.protocol import NamedToolChoice
from app.structured.reasoning import END, make_reasoning_parser
from app.structured.tool_parsers import (
    MarkerParser,
    NamedParser,
    RequiredParser,
    ToolParser,
    make_parser,
    parser_for_template,
)


def _arguments_for_template(arguments: Any) -> Any:
    """Templates write `arguments | tojson`: hand them the object, not its JSON text."""
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except ValueError:
            return arguments
        return value if isinstance(value, dict) else arguments
    return arguments


def template_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Chat messages as the HF chat templates expect them (tool calls and tool results included)."""
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.name:
            d["name"] = m.name
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.function.name, "arguments": _arguments_for_template(c.function.arguments)}}
                for c in m.tool_calls]
        if m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


@functools.lru_cache(maxsize=8)
def special_token_texts(tokenizer: Any) -> tuple[str, ...]:
    """Every special token's text (EOS, end-of-turn, ...), longest first."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    texts = {tok.content for tok in decoder.values() if getattr(tok, "special", False)}
    texts.update(getattr(tokenizer, "all_special_tokens", []) or [])
    return tuple(sorted((t for t in texts if t), key=len, reverse=True))


@dataclass
class ChatStructure:
    grammar: Grammar | None
    tools: list[dict[str, Any]] | None  # what the chat template gets
    tool_parser: ToolParser | None
    reasoning_parser: str | None
    single_call: bool = False  # parallel_tool_calls: false
    grammar_after_reasoning: bool = False

    def shaper(self, prompt_text: str, tokenizer: Any = None) -> OutputShaper | None:
        if self.tool_parser is None and self.reasoning_parser is None:
            return None
        reasoning = None
        if self.reasoning_parser:
            reasoning = make_reasoning_parser(self.reasoning_parser, prompt_text, self.grammar_after_reasoning)
        drop: tuple[str, ...] = ()
        if self.keep_special_tokens and tokenizer is not None:
            marker = getattr(self.tool_parser, "marker", None)
            drop = tuple(t for t in special_token_texts(tokenizer) if t != marker)
        return OutputShaper(reasoning, self.tool_parser, max_calls=1 if self.single_call else None, drop=drop)

    @property
    def keep_special_tokens(self) -> bool:
        """Some formats start with a special token (`<|python_tag|>`, `[TOOL_CALLS]`)."""
        return self.tool_parser is not None and not self.tool_parser.skip_special_tokens


def plan_chat(body: Any, tool_call_parser: str | None, reasoning_parser: str | None,
              template: str | None, constrain_auto: bool = True) -> ChatStructure:
    """Validates the structured fields of a chat request (400s) and plans its run. `constrain_auto`:
    the engine has a grammar backend, so `auto` tool calls can be constrained once they start."""
    tools = body.tools or []
    choice = body.tool_choice if body.tool_choice is not None else ("auto" if tools else "none")
    if tools or body.tool_choice is not None:
        check_tools(tools, choice)
    grammar = request_grammar(body)
    parser: ToolParser | None = None
    if isinstance(choice, NamedToolChoice):
        parser = NamedParser(choice.function.name)
    elif choice == "required":
        parser = RequiredParser()
    elif choice == "auto" and tools:
        name = tool_call_parser or parser_for_template(template)
        if name:
            try:
                parser = make_parser(name)
            except ValueError as exc:  # validated at start; here only for a template-derived name
                raise bad_request(str(exc), "tools") from None
    if (constrain_auto and grammar is None and isinstance(parser, MarkerParser) and parser.constrain
            and choice == "auto"):
        grammar = auto_tools_grammar(tools, parser.marker, *parser.constrain, parallel=body.parallel_tool_calls)
    thinking = (body.chat_template_kwargs or {}).get("enable_thinking", True) is not False
    wrapped = grammar is not None and bool(reasoning_parser) and thinking
    if wrapped:
        grammar = after_reasoning(grammar, END)
    template_tools = [t.model_dump(exclude_none=True) for t in tools] if tools and choice != "none" else None
    split = reasoning_parser if body.separate_reasoning else None
    return ChatStructure(grammar, template_tools, parser, split, single_call=not body.parallel_tool_calls,
                         grammar_after_reasoning=wrapped)
