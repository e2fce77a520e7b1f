"""Reasoning parsers (`--reasoning-parser qwen3 | deepseek-r1`): split `<think>...</think>` off the answer.

Works on the cumulative text; `final=False` holds back a possible start of a marker at the end so a
stream never shows half a marker, and both parts only ever grow.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.structured.tool_parsers import partial_marker_at_end
from engine.args import REASONING_PARSERS

START, END = "<think>", "</think>"


@dataclass(frozen=True)
class ReasoningParser:
    name: str
    # True: the output opens inside the reasoning (the prompt already ends with `<think>`, as
    # DeepSeek-R1's template writes it); False: only an output that starts with `<think>` reasons.
    forced: bool
    end: str = END

    def split(self, text: str, final: bool) -> tuple[str, str]:
        """(reasoning, answer) of the output so far."""
        body = text.lstrip()
        if not final and START.startswith(body):
            return "", ""  # the output may still open a reasoning block with the marker
        if body.startswith(START):
            body = body[len(START):]
        elif not self.forced:
            return "", text[:len(text) - (0 if final else partial_marker_at_end(text, START))]
        body = body.lstrip()
        idx = body.find(self.end)
        if idx < 0:
            if final:
                return body, ""
            return body[:len(body) - partial_marker_at_end(body, self.end)], ""
        return body[:idx], body[idx + len(self.end):].lstrip()


def make_reasoning_parser(name: str, prompt_text: str = "", forced: bool = False) -> ReasoningParser:
    """`prompt_text` is the rendered prompt: a template that ends it with `<think>` (R1, Qwen3
    thinking variants) starts the output inside the reasoning; so does a grammar that was placed after
    the reasoning (`forced`), since the output then has the shape `reasoning</think>answer`."""
    if name not in REASONING_PARSERS:
        raise ValueError(f"unknown reasoning parser {name!r}; use one of {', '.join(REASONING_PARSERS)}")
    forced = forced or name == "deepseek-r1" or prompt_text.rstrip().endswith(START)
    return ReasoningParser(name, forced)
