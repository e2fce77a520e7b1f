"""OpenAI: any OpenAI-compatible `/v1` server (Tessera with an issued key included), through httpx.

Text programs use `/v1/completions`; a `gen` inside an assistant turn of a program that uses roles
uses `/v1/chat/completions` with `messages()`. `select` scores the choices through prompt logprobs
(`/v1/completions` with `echo` and `logprobs`, one request per choice set); a server without them
gets a clear error naming the missing capability.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from lang.backend.base import BaseBackend
from lang.chat_template import PLAIN, ChatTemplate
from lang.choices import ChoicesDecision, ChoicesMethod
from lang.errors import LangError, ServerError
from lang.ir import SamplingParams
from lang.transport import HttpClient

# Sent only when set away from their "off" value: api.openai.com rejects unknown fields.
_EXTRAS = {"top_k": -1, "min_p": 0.0, "ignore_eos": False, "stop_token_ids": [], "regex": None,
           "json_schema": None, "min_new_tokens": 0}


def _meta(body: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
    usage = body.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    reason = choice.get("finish_reason")
    return {"id": body.get("id"), "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"), "cached_tokens": details.get("cached_tokens"),
            "finish_reason": {"type": reason} if reason else None}


class OpenAI(BaseBackend):
    """`OpenAI(model, base_url=..., api_key=...)`; `api_key` defaults to `$OPENAI_API_KEY`."""

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 chat_template: ChatTemplate | None = None) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.http = HttpClient(self.base_url, api_key if api_key is not None else os.environ.get("OPENAI_API_KEY"))
        # text() shows turns with these markers; the server applies its own template to messages().
        self.chat_template = chat_template or PLAIN

    def get_model_name(self) -> str:
        return self.model

    def shutdown(self) -> None:
        self.http.close()

    def _sampling(self, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_new_tokens, "n": params.n or 1,
                                "temperature": params.temperature, "top_p": params.top_p,
                                "frequency_penalty": params.frequency_penalty,
                                "presence_penalty": params.presence_penalty, "stop": params.stop_list() or None}
        if params.stop_regex:
            raise LangError("gen(stop_regex=...) is not part of the OpenAI API; use the RuntimeEndpoint backend")
        for key, off in _EXTRAS.items():
            value = getattr(params, "min_new_tokens" if key == "min_new_tokens" else key)
            if value is not None and value != off and value != ():
                body["min_tokens" if key == "min_new_tokens" else key] = value
        if params.return_logprob:
            body["logprobs"] = True
        return {k: v for k, v in body.items() if v is not None}

    def _use_chat(self, s: Any) -> bool:
        return s.cur_role == "assistant"

    def _chat_messages(self, s: Any) -> list[dict[str, Any]]:
        partial = s.text_[s.cur_role_begin_pos:]
        if partial.strip():
            raise LangError("the OpenAI backend generates an assistant turn through chat completions, which "
                            "cannot continue text already written into that turn; put gen() first in the turn")
        return list(s.messages_)

    def generate(self, s: Any, params: SamplingParams) -> tuple[Any, dict[str, Any]]:
        body = self._sampling(params)
        if self._use_chat(s):
            if "logprobs" in body:
                body["logprobs"] = True
            obj = self.http.post("/chat/completions", {**body, "messages": self._chat_messages(s)})
            texts = [c["message"].get("content") or "" for c in obj["choices"]]
        else:
            if "logprobs" in body:
                body["logprobs"] = max(int(params.top_logprobs_num or 0), 1)
            obj = self.http.post("/completions", {**body, "prompt": s.text_})
            texts = [c["text"] for c in obj["choices"]]
        meta = _meta(obj, obj["choices"][0])
        return (texts if len(texts) > 1 else texts[0]), meta

    def generate_stream(self, s: Any, params: SamplingParams) -> Iterator[tuple[str, dict[str, Any]]]:
        body = {**self._sampling(params), "stream": True}
        body.pop("logprobs", None)
        chat = self._use_chat(s)
        path, extra = ("/chat/completions", {"messages": self._chat_messages(s)}) if chat else ("/completions", {"prompt": s.text_})
        for event in self.http.stream_sse(path, {**body, **extra}):
            for choice in event.get("choices", []):
                piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if piece:
                    yield piece, _meta(event, choice)

    def _prompt_logprobs(self, prompts: list[str], what: str) -> list[dict[str, Any]]:
        try:
            obj = self.http.post("/completions", {"model": self.model, "prompt": prompts, "max_tokens": 0,
                                                  "echo": True, "logprobs": 1, "temperature": 0})
        except ServerError as exc:
            raise LangError(f"select() on the OpenAI backend needs prompt logprobs ({what}: /v1/completions with "
                            f"echo=true and logprobs), which {self.base_url} refused: {exc.message}") from None
        out = sorted(obj["choices"], key=lambda c: c.get("index", 0))
        if any(not (c.get("logprobs") or {}).get("token_logprobs") for c in out):
            raise LangError(f"select() on the OpenAI backend needs prompt logprobs, and {self.base_url} returned none")
        return [c["logprobs"] for c in out]

    def select(self, s: Any, choices: list[str], temperature: float, method: ChoicesMethod) -> ChoicesDecision:
        """The tokens that spell each choice (those ending after the context) scored in one request."""
        text = s.text_
        scored = self._prompt_logprobs([text + c for c in choices], "choices after the context")
        input_lps = []
        for lp in scored:
            entries = []
            for token, logprob, offset in zip(lp["tokens"], lp["token_logprobs"], lp["text_offset"]):
                if offset + len(token) > len(text):
                    entries.append([logprob, None, token])
            input_lps.append(entries)
        normalized = [sum(e[0] or 0.0 for e in entries) / max(len(entries), 1) for entries in input_lps]
        unconditional = None
        if method.requires_unconditional_logprobs:
            alone = self._prompt_logprobs(list(choices), "choices without context")
            unconditional = [[[lp_, None, tok] for tok, lp_ in zip(lp["tokens"], lp["token_logprobs"])] for lp in alone]
            # Both sides must cover the same tokens: align on the choice's own tokens from the end.
            for i, (inp, unc) in enumerate(zip(input_lps, unconditional)):
                n = min(len(inp), len(unc))
                input_lps[i], unconditional[i] = inp[len(inp) - n:], unc[len(unc) - n:]
        return method(choices=choices, normalized_prompt_logprobs=normalized, input_token_logprobs=input_lps,
                      output_token_logprobs=[[] for _ in choices], unconditional_token_logprobs=unconditional)
