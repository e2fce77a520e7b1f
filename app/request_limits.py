"""Limits every request body meets before a route sees it, and tokenization bounded by the context.

- `RequestLimitsMiddleware` (pure ASGI): a body over `--max-request-bytes` is a 413 (from its
  Content-Length header at once, else as soon as the bytes read pass the limit, so an oversized body
  is never held in memory); a JSON body with text that is not valid Unicode (raw invalid UTF-8 bytes,
  or a lone surrogate such as "\\ud800" written as a JSON escape) is a 400 naming the field. Python's
  JSON parser accepts both, and they blow up later in the tokenizer or the engine's message encoding.
- `tokenize_bounded`: a prompt that cannot fit the context is refused after tokenizing a bounded prefix,
  not the whole text (a 1 MB prompt used to become 555 k token ids before the context check).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import APIError, error_body

# A JSON escape of a UTF-16 surrogate; only bodies containing one need the full walk.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Tokens cover at most this many characters on average in any real text; a prefix this long that
# already tokenizes past the context proves the whole prompt cannot fit.
CHARS_PER_TOKEN_BOUND = 16


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def find_bad_unicode(value: Any, path: str = "") -> str | None:
    """The dotted path (e.g. `messages.0.content`) of the first string or key holding a lone surrogate."""
    if isinstance(value, str):
        return path or "body" if _has_surrogate(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _has_surrogate(key):
                return path or "body"
            found = find_bad_unicode(item, sub)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_bad_unicode(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def unicode_error(body: bytes) -> tuple[str, str] | None:
    """(message, param) when a JSON body carries text that is not valid Unicode, else None."""
    try:
        text = body.decode("utf-8")
        raw_invalid = False
    except UnicodeDecodeError:
        # surrogateescape maps each invalid byte to a lone surrogate, so the walk can name its field.
        text = body.decode("utf-8", "surrogateescape")
        raw_invalid = True
    if not raw_invalid and not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return ("the request body is not valid UTF-8", "body") if raw_invalid else None
    param = find_bad_unicode(data)
    if param is None:
        return None  # escaped surrogates that pair up into real characters
    what = "invalid UTF-8 bytes" if raw_invalid else "a lone UTF-16 surrogate"
    return f"{param}: the text contains {what}; send valid Unicode (UTF-8)", param


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int], on_reject: Callable[[str], None]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes()
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if limit and declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, 413, f"The request body ({int(declared)} bytes) exceeds this server's limit of "
                                          f"{limit} bytes (--max-request-bytes).", "body", "too_large")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit and size > limit:
                await self._reject(send, 413, f"The request body exceeds this server's limit of {limit} bytes "
                                              "(--max-request-bytes).", "body", "too_large")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type in (b"", b"application/json") or content_type.endswith(b"+json"):
            bad = unicode_error(body)
            if bad is not None:
                await self._reject(send, 400, bad[0], bad[1], "invalid_unicode")
                return
        await self.app(scope, _replay(body, receive), send)

    async def _reject(self, send: Send, status: int, message: str, param: str, reason: str) -> None:
        self.on_reject(reason)
        payload = json.dumps(error_body(message, "invalid_request_error", param,
                                        "request_too_large" if status == 413 else "invalid_unicode")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hands the buffered body to the app once; later calls (disconnect detection) go to the client."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# Prompts x samples one HTTP request may expand into: a batch is a convenience, not a way to queue an
# unbounded amount of work (and client-side state) behind one connection.
MAX_SEQUENCES_PER_REQUEST = 4096


def check_sequence_count(count: int, param: str) -> None:
    if count > MAX_SEQUENCES_PER_REQUEST:
        raise APIError(400, f"This request expands into {count} sequences (prompts x n); at most "
                            f"{MAX_SEQUENCES_PER_REQUEST} are allowed per request. Split the batch.", param=param)


def context_exceeded(limit: int, prompt_tokens_at_least: int, param: str) -> APIError:
    return APIError(400, f"This model's maximum context length is {limit} tokens. However, the prompt has more than "
                         f"{prompt_tokens_at_least - 1} tokens. Please reduce the prompt.",
                    param=param, code="context_length_exceeded")


def tokenize_bounded(encode: Callable[[str], list[int]], text: str, limit: int | None, param: str) -> list[int]:
    """`encode(text)`, but a text that cannot fit `limit` tokens is refused after encoding a bounded
    prefix. Sound whatever the tokenizer: a prefix never has (meaningfully) more tokens than the whole;
    the +1 allows for a token split at the cut. Blocking: run it in a thread."""
    if limit and len(text) > limit * CHARS_PER_TOKEN_BOUND:
        head = encode(text[: limit * CHARS_PER_TOKEN_BOUND])
        if len(head) > limit + 1:
            raise context_exceeded(limit, len(head) - 1, param)
    return encode(text)
