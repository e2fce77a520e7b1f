"""What every generation request holds around the engine: authentication, engine lease, rate-limit
admission and the usage settle.

`GenScope.open` comes before any work (401, 404 for an unknown model, 503 when the engine is not ready);
`admit` comes after the request was validated (403 / 429); `close` runs exactly once, also when the client
disconnects mid-stream (`ManagedStream` closes it after the last byte or on cancellation), and settles to
the tokens the engine produced.
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
    """One generation request around the engine: authentication, model check, engine lease, then (once
    the prompt is tokenized and validated) the rate-limit admission, and the usage settle at the end.

    The order matters: a request that can never succeed (bad input, too long for the context) is a 400
    before the rate limiter sees it, and the reservation is made with the real prompt length.
    `client` is the engine client while the scope is open.
    """

    def __init__(self, ctx: AppContext, request: Request, model: str | None, check_model: bool = True) -> None:
        self.ctx = ctx
        self.request = request
        self.model = model
        self.check_model = check_model
        self.client: Any = None
        self.admission: Any = None
        self.status = 200
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        # Prompt tokens of the whole request and tokens produced per engine rid so far: what a request
        # that ends early (client gone, engine died) is settled to.
        self.planned_prompt_tokens = 0
        self.reserve_tokens = 0  # prompt + the most it may generate: what `admit` holds against TPM
        self.produced: dict[str, int] = {}
        self._stack = contextlib.AsyncExitStack()
        self._started = time.monotonic()
        self._closed = False
        self._admit_tried = False

    @property
    def headers(self) -> dict[str, str]:
        return dict(getattr(self.admission, "headers", None) or {})

    async def open(self) -> GenScope:
        ctx = self.ctx
        try:
            await authorize(ctx, self.request)
            if self.check_model and not ctx.accepts_model(self.model):
                raise model_not_found(self.model, ctx.model_name)
            self.client = await self._stack.enter_async_context(ctx.supervisor.lease())
        except BaseException as exc:
            self.fail(exc)
            await self.close()
            raise
        return self

    async def admit(self, reserve_tokens: int) -> None:
        """Rate-limit admission (403 / 429 / 400 for a request larger than the key's TPM), charged to the
        served model's short name whichever alias the request used."""
        self._admit_tried = True  # the gate records its own refusals
        try:
            self.admission = await self.ctx.gate.admit(self.request.headers.get("authorization"),
                                                       self.ctx.model_name, reserve_tokens)
        except Exception as exc:
            raise (as_api_error(exc) or exc) from None

    def fail(self, exc: BaseException) -> None:
        exc = engine_error(exc) or exc  # an engine death is a 503 in the usage row and the log, not a 500
        self.status = getattr(exc, "status", 500) if isinstance(exc, Exception) else 499
        # The access log shows how the request really ended (a stream's 200 went out before it failed).
        code = getattr(exc, "code", None)
        self.request.scope[OUTCOME_KEY] = f"{self.status} {code}" if code else str(self.status)

    def progress_for(self, rid: str) -> Callable[[int], None]:
        """The engine client's `progress` callback for one engine sequence."""
        def progress(num_tokens: int) -> None:
            self.produced[rid] = num_tokens
        return progress

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
            # A request that ended early never reported its usage: settle to what the engine produced.
            prompt = self.prompt_tokens or self.planned_prompt_tokens
            completion = max(self.completion_tokens, sum(self.produced.values()))
            try:
                if self.admission is not None:
                    await self.ctx.gate.settle(self.admission, prompt, completion, self.cached_tokens,
                                               time.monotonic() - self._started, self.status)
                elif self.status >= 400 and not self._admit_tried:
                    # Refused before admission (bad input, engine down): no charge, but operators see it.
                    record = getattr(self.ctx.gate, "record_refusal", None)
                    if record is not None:
                        await record(self.request.headers.get("authorization"), self.ctx.model_name, self.status)
            except Exception:  # usage accounting must never break the response
                logger.exception("gate settle failed")

    async def __aenter__(self) -> GenScope:
        return await self.open()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        await self.close()


class ManagedStream(StreamingResponse):
    """SSE response that runs `on_close` however the stream ends (done, error, or client gone); when the
    client left before the last event, `gen_scope` records it as 499 (the tokens it was sent still count)."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]],
                 headers: dict[str, str] | None = None, gen_scope: GenScope | None = None) -> None:
        self._content = content
        self._completed = False
        super().__init__(self._track(), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})
        self._on_close = on_close
        self._gen_scope = gen_scope

    async def _track(self) -> AsyncIterator[str]:
        async with contextlib.aclosing(self._content):  # type: ignore[type-var]
            async for chunk in self._content:
                yield chunk
        self._completed = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            if not self._completed and self._gen_scope is not None and self._gen_scope.status < 400:
                self._gen_scope.status = 499
            await self._on_close()


def sse(data: str) -> str:
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"
