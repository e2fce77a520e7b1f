"""POST /generate: SGLang's native generation route (what `sglang.RuntimeEndpoint` and
`bench_serving --backend sglang` speak). A list in gives a list out; `n > 1` gives n results per prompt."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from app.context import AppContext
from app.errors import bad_request
from app.generation import (
    EngineReq,
    abort_on_disconnect,
    check_priority,
    check_prompt,
    check_request_fields,
    collect_many,
    engine_error,
    expand_n,
    new_rid,
    parse_sampling,
    remaining_context,
    stream_error,
    stream_many,
    warm_prefix,
)
from app.native_protocol import GenerateRequest, NativeItem, split_items
from app.request_limits import check_sequence_count, tokenize_bounded
from app.request_scope import SSE_DONE, GenScope, ManagedStream, sse
from engine.request_checks import check_logprob_args


@dataclass
class _Plan:
    flat: list[EngineReq]
    warm: list[tuple[list[int], str]]  # prompts to prefill first (n > 1)
    batched: bool
    user_rids: list[str]


def _tokenize(tokenizer: Any, items: list[NativeItem], limit: int | None) -> list[list[int]]:
    out = []
    for item in items:
        if item.input_ids is not None:
            out.append(item.input_ids)
        elif tokenizer is None:
            raise bad_request("Text prompts need a tokenizer; this server runs with --skip-tokenizer-init. "
                              "Send 'input_ids'.", "text")
        else:
            out.append(tokenize_bounded(lambda t: list(tokenizer(t)["input_ids"]), item.text or "", limit, "text"))
    return out


async def _prepare(ctx: AppContext, scope: GenScope, body: GenerateRequest, items: list[NativeItem],
                   batched: bool) -> _Plan:
    client = scope.client
    param = "text" if body.text is not None else "input_ids"
    check_sequence_count(len(items), param)  # before any tokenization work
    limit = client.model_info.get("max_context_length")
    all_ids = await asyncio.to_thread(_tokenize, client.tokenizer, items, limit)
    vocab = client.model_info.get("vocab_size")
    flat: list[EngineReq] = []
    warm: list[tuple[list[int], str]] = []
    groups: dict[str, set[str]] = {}  # client rid -> engine rids, registered only once every check passed
    for item, ids in zip(items, all_ids, strict=True):
        sampling = parse_sampling(item.sampling, vocab_size=vocab)
        # As SGLang does: the prompt must be shorter than the context, and max_new_tokens is clipped to the room left.
        check_prompt(ids, 0, client.model_info, param, "max_new_tokens")
        sampling.max_new_tokens = min(sampling.max_new_tokens, remaining_context(ids, client.model_info))
        sampling.min_new_tokens = min(sampling.min_new_tokens, sampling.max_new_tokens)
        check_request_fields(check_logprob_args, item.return_logprob, item.logprob_start_len, item.top_logprobs_num,
                             len(ids), vocab)
        rid = item.rid or new_rid()
        reqs = expand_n(EngineReq(ids, sampling, rid, item.return_logprob, item.logprob_start_len,
                                  item.top_logprobs_num, body.return_text_in_logprobs,
                                  check_priority(item.priority, ctx.args.schedule_policy)), sampling.n)
        if sampling.n > 1 and not ctx.args.disable_radix_cache:
            warm.append((ids, rid))
        if item.rid:
            groups[item.rid] = {r.rid for r in reqs}
        flat.extend(reqs)
        scope.planned_prompt_tokens += len(ids) * len(reqs)
        scope.reserve_tokens += (len(ids) + sampling.max_new_tokens) * len(reqs)
        check_sequence_count(len(flat), param)
    if batched and isinstance(body.rid, str):
        # One rid for a whole batch: /abort_request with it aborts every item.
        groups[body.rid] = {r.rid for r in flat}
    ctx.rid_groups.update(groups)
    return _Plan(flat, warm, batched or len(flat) > 1, list(groups))


async def _run(scope: GenScope, plan: _Plan) -> list[dict[str, Any]]:
    await asyncio.gather(*(warm_prefix(scope.client, ids, rid) for ids, rid in plan.warm))
    return await collect_many(scope.client, plan.flat, scope.progress_for)


def _account(scope: GenScope, results: list[dict[str, Any]]) -> None:
    for r in results:
        meta = r.get("meta_info", {})
        scope.add_usage(int(meta.get("prompt_tokens", 0)), int(meta.get("completion_tokens", 0)),
                        int(meta.get("cached_tokens", 0) or 0))


async def generate(body: GenerateRequest, request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    items, batched = split_items(body)
    scope = await GenScope(ctx, request, None, check_model=False).open()
    plan: _Plan | None = None
    try:
        plan = await _prepare(ctx, scope, body, items, batched)
        await scope.admit(scope.reserve_tokens)
        if body.stream:
            return ManagedStream(_stream(scope, plan), on_close=lambda: _close(ctx, scope, plan),
                                 headers=scope.headers, gen_scope=scope)
        results = await abort_on_disconnect(request, _run(scope, plan))
    except BaseException as exc:
        scope.fail(exc)
        await _close(ctx, scope, plan)
        mapped = engine_error(exc)
        if mapped is not None:
            raise mapped from None
        raise
    _account(scope, results)
    await _close(ctx, scope, plan)
    return JSONResponse(results if plan.batched else results[0], headers=scope.headers)


async def _close(ctx: AppContext, scope: GenScope, plan: _Plan | None) -> None:
    for rid in plan.user_rids if plan else ():
        ctx.rid_groups.pop(rid, None)
    await scope.close()


async def _stream(scope: GenScope, plan: _Plan) -> AsyncIterator[str]:
    finals: dict[int, dict[str, Any]] = {}
    try:
        await asyncio.gather(*(warm_prefix(scope.client, ids, rid) for ids, rid in plan.warm))
        async with contextlib.aclosing(stream_many(scope.client, plan.flat, stream=True,
                                                   progress_for=scope.progress_for)) as items:
            async for k, item in items:
                if plan.batched:
                    item = {**item, "index": k}
                if item["meta_info"].get("finish_reason") is not None:
                    finals[k] = item
                yield sse(json.dumps(item))
        _account(scope, list(finals.values()))
        yield SSE_DONE
    except Exception as exc:
        _account(scope, list(finals.values()))
        err = stream_error(exc)
        scope.fail(err)
        yield sse(json.dumps(err.body()))
        yield SSE_DONE
