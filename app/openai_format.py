"""OpenAI response pieces built from native `/generate` dicts: finish reasons, logprobs, usage."""

from __future__ import annotations

import time
import uuid
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now_s() -> int:
    return int(time.time())


def finish_reason(meta: dict[str, Any]) -> str | None:
    reason = meta.get("finish_reason")
    if not reason:
        return None
    kind = reason.get("type")
    # OpenAI knows "stop" and "length"; an abort (client or operator) is reported as SGLang does.
    return kind if kind in ("stop", "length") else "abort"


def matched_stop(meta: dict[str, Any]) -> str | int | None:
    reason = meta.get("finish_reason") or {}
    return reason.get("matched") if reason.get("type") == "stop" else None


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def sglext(cached_tokens: int) -> dict[str, Any]:
    """SGLang's response-level extension for `return_cached_tokens_details` (all hits are device-cache)."""
    return {"sglext": {"cached_tokens_details": {"device": cached_tokens, "host": 0}}}


def _token_text(entry: list[Any]) -> str:
    return entry[2] if len(entry) > 2 and isinstance(entry[2], str) else ""


def chat_logprobs(entries: list[list[Any]], tops: list[Any] | None, num_top: int) -> dict[str, Any]:
    """`choices[].logprobs` of a chat completion from [logprob, id, text] triples."""
    content = []
    for i, entry in enumerate(entries):
        text = _token_text(entry)
        top = (tops[i] if tops and i < len(tops) else None) or []
        content.append({
            "token": text,
            "logprob": float(entry[0]),
            "bytes": list(text.encode("utf-8")),
            "top_logprobs": [{"token": _token_text(t), "logprob": float(t[0]),
                              "bytes": list(_token_text(t).encode("utf-8"))} for t in top[:num_top]],
        })
    return {"content": content}


def completion_logprobs(entries: list[list[Any]], tops: list[Any] | None, num_top: int,
                        offset: int = 0) -> dict[str, Any]:
    """Legacy `choices[].logprobs` (tokens, token_logprobs, top_logprobs, text_offset)."""
    tokens, token_logprobs, top_logprobs, text_offset = [], [], [], []
    for i, entry in enumerate(entries):
        text = _token_text(entry)
        tokens.append(text)
        token_logprobs.append(None if entry[0] is None else float(entry[0]))
        top = (tops[i] if tops and i < len(tops) else None) or []
        top_logprobs.append({_token_text(t): float(t[0]) for t in top[:num_top]} if num_top and top else None)
        text_offset.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
            "text_offset": text_offset}
