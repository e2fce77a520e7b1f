"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from app.chat_template import render_chat_text, tokenize_prompt
from app.context import AppContext
from app.errors import bad_request
from app.gate import UNBOUNDED_RESERVE_TOKENS
from app.generation import (
    abort_on_disconnect,
    check_prompt,
    new_rid,
    remaining_context,
    stream_error,
    stream_many,
)
from app.openai_common import RunPlan, close_scope, fail_scope, parse_openai_sampling, sampling_from
from app.openai_format import chat_logprobs, finish_reason, matched_stop, new_id, now_s, sglext, usage
from app.openai_protocol import ChatCompletionRequest
from app.request_scope import SSE_DONE, GenScope, ManagedStream, sse
from app.structured.assembler import OutputShaper
from app.structured.chat_plan import plan_chat, template_messages

Shapers = Callable[[], "OutputShaper | None"]


async def _prepare(ctx: AppContext, scope: GenScope, body: ChatCompletionRequest) -> tuple[RunPlan, Shapers]:
    client = scope.client
    if client.tokenizer is None:
        raise bad_request("Chat needs a tokenizer; this server runs with --skip-tokenizer-init.", "messages")
    # In a thread: checking big schemas compiles them.
    structure = await asyncio.to_thread(plan_chat, body, ctx.args.tool_call_parser, ctx.args.reasoning_parser,
                                        ctx.chat_template or getattr(client.tokenizer, "chat_template", None),
                                        ctx.args.grammar_backend != "none")
    prompt_text = await asyncio.to_thread(render_chat_text, client.tokenizer, ctx.chat_template,
                                          template_messages(body.messages), body.continue_final_message,
                                          structure.tools, body.chat_template_kwargs)
    input_ids = await asyncio.to_thread(tokenize_prompt, client.tokenizer, prompt_text,
                                        client.model_info.get("max_context_length"))
    max_tokens = body.requested_max_tokens
    reserve = max_tokens
    if max_tokens is None:
        # "Up to the end of the context", but a prompt that fills the context is still an error. The rate
        # limiter holds a documented estimate instead of the whole context, and settles to the real count.
        max_tokens = max(remaining_context(input_ids, client.model_info), 1)
        reserve = min(max_tokens, UNBOUNDED_RESERVE_TOKENS)
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    check_prompt(input_ids, max_tokens, client.model_info, "messages", param)
    scope.planned_prompt_tokens = len(input_ids)
    scope.reserve_tokens = len(input_ids) + reserve * body.n
    raw = sampling_from(body, max_tokens, structure.grammar)
    if structure.keep_special_tokens:
        raw["skip_special_tokens"] = False
    sampling = parse_openai_sampling(raw, structure.grammar, client.model_info.get("vocab_size"))
    rid = body.rid or new_rid()
    plan = RunPlan.build([input_ids], sampling, rid, body.n, not ctx.args.disable_radix_cache,
                         return_logprob=body.logprobs, top_logprobs_num=body.top_logprobs or 0,
                         return_text_in_logprobs=True)
    if body.rid:
        ctx.rid_groups[body.rid] = plan.engine_rids
    return plan, lambda: structure.shaper(prompt_text, client.tokenizer)


async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    scope = await GenScope(ctx, request, body.model).open()
    try:
        plan, shapers = await _prepare(ctx, scope, body)
        await scope.admit(scope.reserve_tokens)
        if body.stream:
            return ManagedStream(_stream(ctx, scope, body, plan, shapers),
                                 on_close=lambda: close_scope(ctx, scope, body.rid),
                                 headers=scope.headers, gen_scope=scope)
        finals, cached = await abort_on_disconnect(request, plan.run(scope.client, scope.progress_for))
    except BaseException as exc:
        mapped = await fail_scope(ctx, scope, body.rid, exc)
        if mapped is not None:
            raise mapped from None
        raise
    choices = []
    for i, final in enumerate(finals):
        meta = final["meta_info"]
        lp = None
        if body.logprobs:
            lp = chat_logprobs(meta.get("output_token_logprobs", []), meta.get("output_top_logprobs"),
                               body.top_logprobs or 0)
        shaper = shapers()
        message = shaper.message(final["text"]) if shaper else {"role": "assistant", "content": final["text"]}
        reason = OutputShaper.finish_reason(finish_reason(meta), "tool_calls" in message)
        choices.append({"index": i, "message": message, "logprobs": lp, "finish_reason": reason,
                        "matched_stop": matched_stop(meta)})
    completion = sum(int(f["meta_info"].get("completion_tokens", 0)) for f in finals)
    scope.add_usage(len(plan.prompts[0]), completion, cached[0])
    await close_scope(ctx, scope, body.rid)
    return JSONResponse({
        "id": new_id("chatcmpl"), "object": "chat.completion", "created": now_s(), "model": ctx.model_name,
        "choices": choices, "usage": usage(len(plan.prompts[0]), completion, cached[0]),
        "system_fingerprint": None, **(sglext(cached[0]) if body.return_cached_tokens_details else {}),
    }, headers=scope.headers)


async def _stream(ctx: AppContext, scope: GenScope, body: ChatCompletionRequest, plan: RunPlan,
                  shapers: Shapers) -> AsyncIterator[str]:
    cid, created, model = new_id("chatcmpl"), now_s(), ctx.model_name
    extra: dict[str, Any] = {"usage": None} if body.include_usage else {}

    def chunk(choice: dict[str, Any], ext: dict[str, Any] | None = None) -> str:
        return sse(json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                               "choices": [choice], "system_fingerprint": None, **extra, **(ext or {})}))

    sent_text = [""] * len(plan.flat)
    sent_lp = [0] * len(plan.flat)
    completion = [0] * len(plan.flat)
    shaper_list = [shapers() for _ in plan.flat]
    try:
        warmed = await plan.warm_up(scope.client)
        for i in range(len(plan.flat)):
            yield chunk({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None})
        first_meta: dict[str, Any] = {}
        async with contextlib.aclosing(stream_many(scope.client, plan.flat, stream=True,
                                                   progress_for=scope.progress_for)) as items:
            async for i, item in items:
                meta = item["meta_info"]
                if i == 0:
                    first_meta = meta
                text = item["text"]
                reason = finish_reason(meta)
                shaper = shaper_list[i]
                if shaper is not None:
                    deltas = shaper.deltas(text, final=reason is not None)
                    reason = OutputShaper.finish_reason(reason, shaper.called)
                else:
                    delta = text[len(sent_text[i]):] if text.startswith(sent_text[i]) else ""
                    sent_text[i] += delta
                    deltas = [{"content": delta}] if delta else []
                lp = None
                if body.logprobs:
                    entries = meta.get("output_token_logprobs", [])[sent_lp[i]:]
                    tops = (meta.get("output_top_logprobs") or [])[sent_lp[i]:]
                    sent_lp[i] += len(entries)
                    lp = chat_logprobs(entries, tops, body.top_logprobs or 0) if entries else None
                if not deltas and reason is None and lp is None:
                    continue
                # One chunk per delta (a tool call's opening delta stands alone); the step's logprobs ride on
                # the first, the finish reason on the last.
                deltas = deltas or [{}]
                for k, delta in enumerate(deltas):
                    last = k == len(deltas) - 1
                    choice: dict[str, Any] = {"index": i, "delta": delta, "logprobs": lp if k == 0 else None,
                                              "finish_reason": reason if last else None}
                    ext = None
                    if last and reason is not None:
                        choice["matched_stop"] = matched_stop(meta)
                        completion[i] = int(meta.get("completion_tokens", 0))
                        if body.return_cached_tokens_details:  # on the finish chunk: it always has a choice
                            ext = sglext(warmed[0] if warmed is not None else int(meta.get("cached_tokens", 0) or 0))
                    yield chunk(choice, ext)
        cached = warmed[0] if warmed is not None else int(first_meta.get("cached_tokens", 0) or 0)
        scope.add_usage(len(plan.prompts[0]), sum(completion), cached)
        if body.include_usage:
            yield sse(json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                  "choices": [], "usage": usage(len(plan.prompts[0]), sum(completion), cached)}))
        yield SSE_DONE
    except Exception as exc:
        err = stream_error(exc)
        scope.fail(err)
        yield sse(json.dumps(err.body()))
        yield SSE_DONE
