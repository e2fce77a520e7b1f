"""The life of one generation request around the engine: gate admission, engine lease, usage settle.

`GenScope` is entered before any work (401/403/429 from the gate, 404 for an unknown model, 503 when
the engine is not ready) and closed exactly once, also when the client disconnects mid-stream
(`ManagedStream` closes it after the last byte or on cancellation).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.context import AppContext
from app.errors import APIError, as_api_error
from app.generation import engine_error

logger = logging.getLogger(__name__)
OUTCOME_KEY = "tessera.outcome"  # ASGI scope key read by the access log (app.request_log)


def model_not_found(model: str | None, served: str) -> APIError:
    return APIError(404, f"The model '{model}' does not exist; this server serves '{served}'.", param="model",
                    code="model_not_found")


async def authorize(ctx: AppContext, request: Request) -> None:
    """Authentication for routes that generate nothing (no rate-limit charge where the gate allows)."""
    authorization = request.headers.get("authorization")
    authenticate = getattr(ctx.gate, "authenticate", None)
    try:
        if authenticate is not None:
            await authenticate(authorization)
            return
        admission = await ctx.gate.admit(authorization, ctx.model_name, 0)
        await ctx.gate.settle(admission, 0, 0, 0, 0.0, 200)
    except Exception as exc:
        raise (as_api_error(exc) or exc) from None


class GenScope:
    """Admission + engine lease for one request. `client` is the engine client while it is open."""

    def __init__(self, ctx: AppContext, request: Request, model: str | None, reserve_tokens: int,
                 check_model: bool = True) -> None:
        self.ctx = ctx
        self.request = request
        self.model = model
        self.reserve_tokens = reserve_tokens
        self.check_model = check_model
        self.client: Any = None
        self.admission: Any = None
        self.status = 200
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self._stack = contextlib.AsyncExitStack()
        self._started = time.monotonic()
        self._closed = False

    @property
    def headers(self) -> dict[str, str]:
        return dict(getattr(self.admission, "headers", None) or {})

    async def open(self) -> GenScope:
        ctx = self.ctx
        try:
            self.admission = await ctx.gate.admit(self.request.headers.get("authorization"),
                                                  self.model or ctx.model_name, self.reserve_tokens)
        except Exception as exc:
            raise (as_api_error(exc) or exc) from None
        try:
            if self.check_model and not ctx.accepts_model(self.model):
                raise model_not_found(self.model, ctx.model_name)
            self.client = await self._stack.enter_async_context(ctx.supervisor.lease())
        except BaseException as exc:
            self.status = getattr(exc, "status", 500)
            await self.close()
            raise
        return self

    def fail(self, exc: BaseException) -> None:
        exc = engine_error(exc) or exc  # an engine death is a 503 in the usage row and the log, not a 500
        self.status = getattr(exc, "status", 500) if isinstance(exc, Exception) else 499
        # The access log shows how the request really ended (a stream's 200 went out before it failed).
        code = getattr(exc, "code", None)
        self.request.scope[OUTCOME_KEY] = f"{self.status} {code}" if code else str(self.status)

    def add_usage(self, prompt: int, completion: int, cached: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cached_tokens += cached

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stack.aclose()
        finally:
            if self.admission is not None:
                try:
                    await self.ctx.gate.settle(self.admission, self.prompt_tokens, self.completion_tokens,
                                               self.cached_tokens, time.monotonic() - self._started, self.status)
                except Exception:  # usage accounting must never break the response
                    logger.exception("gate settle failed")

    async def __aenter__(self) -> GenScope:
        return await self.open()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        await self.close()


class ManagedStream(StreamingResponse):
    """SSE response that runs `on_close` however the stream ends (done, error, or client gone)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await self._on_close()


def sse(data: str) -> str:
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"
