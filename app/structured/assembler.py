"""Model output → an OpenAI assistant message (non-streaming) or deltas (streaming).

One `OutputShaper` per choice: the reasoning parser splits off `reasoning_content`, the tool parser finds
tool calls in the answer. Streaming follows OpenAI: the first delta of a call carries `index`, `id`,
`type`, the name and `arguments: ""`; later deltas carry argument fragments.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from app.structured.json_scan import CallSnap
from app.structured.reasoning import ReasoningParser
from app.structured.tool_parsers import ToolParser, ToolSnap, valid_call


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


@dataclass
class _SentCall:
    id: str
    args: str = ""


@dataclass
class OutputShaper:
    reasoning: ReasoningParser | None = None
    tools: ToolParser | None = None
    max_calls: int | None = None  # 1 with parallel_tool_calls: false (later calls are dropped)
    # Special tokens' text, cut from the end of the output when a format keeps special tokens for its marker:
    # the EOS / end-of-turn token must not end up in the content. Only at the end (where the engine stops),
    # so a step costs O(number of tokens), and mid-stream it is a hold-back: streaming stays append-only.
    drop: tuple[str, ...] = ()
    _sent_reasoning: str = ""
    _sent_content: str = ""
    _sent_calls: list[_SentCall] = field(default_factory=list)

    def _parse(self, text: str, final: bool) -> tuple[str, ToolSnap]:
        cut = True
        while cut:
            cut = False
            for token in self.drop:
                if text.endswith(token):
                    text, cut = text[:-len(token)], True
        reasoning, answer = self.reasoning.split(text, final) if self.reasoning else ("", text)
        snap = self.tools.snapshot(answer, final) if self.tools else ToolSnap(answer)
        if self.max_calls is not None:
            snap.calls = snap.calls[:self.max_calls]
        return reasoning, snap

    def message(self, text: str) -> dict[str, Any]:
        """The whole `choices[].message` of a finished output."""
        reasoning, snap = self._parse(text, final=True)
        calls = [c for c in snap.calls if valid_call(c)]
        msg: dict[str, Any] = {"role": "assistant", "content": snap.content}
        if self.reasoning is not None:
            msg["reasoning_content"] = reasoning or None
        if calls:
            msg["content"] = snap.content if snap.content.strip() else None
            msg["tool_calls"] = [{"id": new_call_id(), "type": "function",
                                  "function": {"name": c.name, "arguments": c.args}} for c in calls]
        return msg

    @staticmethod
    def finish_reason(reason: str | None, msg_or_calls: bool) -> str | None:
        """OpenAI says "tool_calls" when the model stopped after calling tools."""
        return "tool_calls" if reason == "stop" and msg_or_calls else reason

    @property
    def called(self) -> bool:
        return bool(self._sent_calls)

    def deltas(self, text: str, final: bool) -> list[dict[str, Any]]:
        """The deltas that bring the client from what it was sent to `text`."""
        reasoning, snap = self._parse(text, final)
        out: list[dict[str, Any]] = []
        if reasoning.startswith(self._sent_reasoning) and len(reasoning) > len(self._sent_reasoning):
            out.append({"reasoning_content": reasoning[len(self._sent_reasoning):]})
            self._sent_reasoning = reasoning
        content = snap.content
        if content.startswith(self._sent_content) and len(content) > len(self._sent_content):
            piece = content[len(self._sent_content):]
            self._sent_content = content
            if not (self._sent_calls and not piece.strip()):
                out.append({"content": piece})
        for k, call in enumerate(snap.calls):
            out.extend(self._call_deltas(k, call, final))
        return out

    def _call_deltas(self, k: int, call: CallSnap, final: bool) -> list[dict[str, Any]]:
        if call.name is None or k > len(self._sent_calls):
            return []
        if final and not valid_call(call) and k == len(self._sent_calls):
            return []  # never started and never became a call
        out = []
        if k == len(self._sent_calls):
            sent = _SentCall(new_call_id())
            self._sent_calls.append(sent)
            out.append({"tool_calls": [{"index": k, "id": sent.id, "type": "function",
                                        "function": {"name": call.name, "arguments": ""}}]})
        sent = self._sent_calls[k]
        if call.args_streamable and call.args.startswith(sent.args) and len(call.args) > len(sent.args):
            piece = call.args[len(sent.args):]
            sent.args = call.args
            out.append({"tool_calls": [{"index": k, "function": {"arguments": piece}}]})
        return out
