"""The life of one OpenAI request (`/v1/chat/completions`, `/v1/completions`), in order, in one place.

    authenticate, check the model, lease the engine          (GenScope.open: 401 / 404 / 503)
    → endpoint.prepare: render / tokenize, validate, plan    (400s, before any rate limit)
    → rate-limit admission with the real prompt length       (GenScope.admit: 403 / 429 / 400 too large)
    → run: warm the shared prefix (n > 1), then the engine sequences, streamed or collected, each
      reporting its token count as it goes (GenScope.progress_for: what an early end settles to)
    → endpoint shapes the choices / chunks; usage (+ the usage chunk)
    → close: forget the rid group, settle usage and limits (also on error or client disconnect)

Failures are mapped here: before the response starts, an engine failure becomes its OpenAI error
(`engine_error`) and is recorded on the scope; after a stream's 200 went out, it becomes an error event
and `[DONE]` (`stream_error`). The endpoint modules (`openai_chat`, `openai_completions`) only know their
own request and response shapes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from app.context import AppContext
from app.generation import abort_on_disconnect, engine_error, stream_error, stream_many
from app.openai_common import RunPlan
from app.openai_format import new_id, now_s, sglext, usage
from app.openai_protocol import ChatCompletionRequest, CompletionRequest
from app.request_scope import SSE_DONE, GenScope, ManagedStream, sse

Body = ChatCompletionRequest | CompletionRequest
Items = AsyncIterator[tuple[int, dict[str, Any]]]
Chunks = AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]


@dataclass
class Prepared:
    """An endpoint's validated request: the engine plan, what the rate limiter holds for it (prompt + the
    most it may generate), and the endpoint's own extras for shaping the response."""

    plan: RunPlan
    reserve_tokens: int
    prompt_texts: list[str] = field(default_factory=list)  # completions' `echo`
    new_shaper: Callable[[], Any] = lambda: None  # chat's structured output: one OutputShaper per choice

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.plan.prompts)


class Endpoint(Protocol):
    id_prefix: str
    object_name: str
    chunk_object: str

    async def prepare(self, ctx: AppContext, client: Any, body: Any) -> Prepared:
        """Renders / tokenizes and validates (400s); no engine work and no rate limit yet."""
        ...

    def choices(self, body: Any, prepared: Prepared, finals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The `choices` of a non-streaming response, one per engine sequence."""
        ...

    def stream_choices(self, body: Any, prepared: Prepared, items: Items, warmed: list[int] | None) -> Chunks:
        """(choice, extra top-level keys) for each chunk worth sending."""
        ...


async def serve(endpoint: Endpoint, body: Body, request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    scope = await GenScope(ctx, request, body.model).open()
    try:
        prepared = await endpoint.prepare(ctx, scope.client, body)
        plan = prepared.plan
        scope.planned_prompt_tokens = prepared.prompt_tokens
        scope.reserve_tokens = prepared.reserve_tokens
        await scope.admit(prepared.reserve_tokens)
        if body.rid:
            ctx.rid_groups[body.rid] = plan.engine_rids  # so /abort_request can name it
        if body.stream:
            return ManagedStream(_stream(endpoint, ctx, scope, body, prepared),
                                 on_close=lambda: _close(ctx, scope, body.rid), headers=scope.headers,
                                 gen_scope=scope)
        finals, cached = await abort_on_disconnect(request, plan.run(scope.client, scope.progress_for))
    except BaseException as exc:
        # Failed before the response began: record the outcome, settle, answer with the OpenAI error.
        scope.fail(exc)
        await _close(ctx, scope, body.rid)
        mapped = engine_error(exc)
        if mapped is not None:
            raise mapped from None
        raise
    prompt_tokens = prepared.prompt_tokens
    completion = sum(int(f["meta_info"].get("completion_tokens", 0)) for f in finals)
    scope.add_usage(prompt_tokens, completion, sum(cached))
    await _close(ctx, scope, body.rid)
    return JSONResponse({
        "id": new_id(endpoint.id_prefix), "object": endpoint.object_name, "created": now_s(),
        "model": ctx.model_name, "choices": endpoint.choices(body, prepared, finals),
        "usage": usage(prompt_tokens, completion, sum(cached)), "system_fingerprint": None,
        **(sglext(cached[0]) if body.return_cached_tokens_details else {}),
    }, headers=scope.headers)


async def _close(ctx: AppContext, scope: GenScope, rid: str | None) -> None:
    """Ends the request exactly once: forgets its rid group (for /abort_request) and settles its scope."""
    if rid:
        ctx.rid_groups.pop(rid, None)
    await scope.close()


async def _stream(endpoint: Endpoint, ctx: AppContext, scope: GenScope, body: Body,
                  prepared: Prepared) -> AsyncIterator[str]:
    plan = prepared.plan
    head = {"id": new_id(endpoint.id_prefix), "object": endpoint.chunk_object, "created": now_s(),
            "model": ctx.model_name}
    extra: dict[str, Any] = {"usage": None} if body.include_usage else {}
    completion = [0] * len(plan.flat)
    first_meta: list[dict[str, Any]] = [{} for _ in plan.prompts]  # of each prompt's first sample

    async def tally(items: Items) -> Items:
        """Notes what usage needs (final token counts, cached tokens) as items pass to the endpoint."""
        async for k, item in items:
            meta = item["meta_info"]
            if k % plan.n == 0:
                first_meta[k // plan.n] = meta
            if meta.get("finish_reason"):
                completion[k] = int(meta.get("completion_tokens", 0))
            yield k, item

    try:
        warmed = await plan.warm_up(scope.client)
        async with contextlib.aclosing(stream_many(scope.client, plan.flat, stream=True,
                                                   progress_for=scope.progress_for)) as items, \
                contextlib.aclosing(endpoint.stream_choices(body, prepared, tally(items), warmed)) as chunks:
            async for choice, ext in chunks:
                yield sse(json.dumps({**head, "choices": [choice], "system_fingerprint": None, **extra, **ext}))
        cached = warmed if warmed is not None else [int(m.get("cached_tokens", 0) or 0) for m in first_meta]
        prompt_tokens = prepared.prompt_tokens
        scope.add_usage(prompt_tokens, sum(completion), sum(cached))
        if body.include_usage:
            yield sse(json.dumps({**head, "choices": [], "usage": usage(prompt_tokens, sum(completion), sum(cached))}))
        yield SSE_DONE
    except Exception as exc:
        # After the 200 went out: an error event, then [DONE]; the scope records the real outcome.
        err = stream_error(exc)
        scope.fail(err)
        yield sse(json.dumps(err.body()))
        yield SSE_DONE
