"""POST /v1/completions (legacy text completions: str / list / token-id prompts, echo, logprobs)."""

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
    abort_on_disconnect,
    check_prompt,
    check_request_fields,
    new_rid,
    stream_error,
    stream_many,
)
from app.openai_common import RunPlan, close_scope, fail_scope, parse_openai_sampling, sampling_from
from app.openai_format import completion_logprobs, finish_reason, matched_stop, new_id, now_s, sglext, usage
from app.openai_protocol import CompletionRequest
from app.request_limits import check_sequence_count, tokenize_bounded
from app.request_scope import SSE_DONE, GenScope, ManagedStream, sse
from app.structured.constraints import request_grammar
from engine.request_checks import check_input_ids


@dataclass
class _Prepared:
    plan: RunPlan
    prompt_texts: list[str]


def _prompt_list(prompt: Any) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [list(prompt)]
    return list(prompt)


def _tokenize_all(tokenizer: Any, prompts: list[str | list[int]], echo: bool,
                  limit: int | None = None) -> tuple[list[list[int]], list[str]]:
    """Blocking: runs in a thread."""
    ids, texts = [], []
    for p in prompts:
        if isinstance(p, str):
            if tokenizer is None:
                raise bad_request("Text prompts need a tokenizer; this server runs with --skip-tokenizer-init.",
                                  "prompt")
            ids.append(tokenize_bounded(lambda t: list(tokenizer(t)["input_ids"]), p, limit, "prompt"))
            texts.append(p)
        else:
            ids.append(list(p))
            texts.append(tokenizer.decode(p) if echo and tokenizer is not None else "")
    return ids, texts


async def _prepare(ctx: AppContext, scope: GenScope, body: CompletionRequest) -> _Prepared:
    client = scope.client
    prompts = _prompt_list(body.prompt)
    check_sequence_count(len(prompts) * body.n, "prompt")
    for p in prompts:  # before echo decodes them: an id past the vocabulary must be a 400, not a decode error
        if not isinstance(p, str):
            check_request_fields(check_input_ids, p, client.model_info.get("vocab_size"), "prompt")
    ids, texts = await asyncio.to_thread(_tokenize_all, client.tokenizer, prompts, body.echo,
                                         client.model_info.get("max_context_length"))
    max_tokens = body.max_tokens if body.max_tokens is not None else 16
    for p in ids:
        check_prompt(p, max_tokens, client.model_info, "prompt")
    scope.planned_prompt_tokens = sum(len(p) for p in ids)
    scope.reserve_tokens = scope.planned_prompt_tokens + max_tokens * body.n * len(ids)
    grammar = request_grammar(body)
    sampling = parse_openai_sampling(sampling_from(body, max_tokens, grammar), grammar,
                                     client.model_info.get("vocab_size"))
    want_lp = body.logprobs is not None
    plan = RunPlan.build(ids, sampling, body.rid or new_rid(), body.n, not ctx.args.disable_radix_cache,
                         return_logprob=want_lp, top_logprobs_num=body.logprobs or 0,
                         logprob_start_len=0 if (want_lp and body.echo) else -1, return_text_in_logprobs=True)
    if body.rid:
        ctx.rid_groups[body.rid] = plan.engine_rids
    return _Prepared(plan, texts)


async def create_completion(body: CompletionRequest, request: Request) -> Response:
    ctx: AppContext = request.app.state.ctx
    scope = await GenScope(ctx, request, body.model).open()
    try:
        prep = await _prepare(ctx, scope, body)
        await scope.admit(scope.reserve_tokens)
        if body.stream:
            return ManagedStream(_stream(ctx, scope, body, prep), on_close=lambda: close_scope(ctx, scope, body.rid),
                                 headers=scope.headers, gen_scope=scope)
        finals, cached = await abort_on_disconnect(request, prep.plan.run(scope.client, scope.progress_for))
    except BaseException as exc:
        mapped = await fail_scope(ctx, scope, body.rid, exc)
        if mapped is not None:
            raise mapped from None
        raise
    plan = prep.plan
    choices = []
    for k, final in enumerate(finals):
        meta = final["meta_info"]
        prefix = prep.prompt_texts[k // plan.n] if body.echo else ""
        choices.append({"index": k, "text": prefix + final["text"], "logprobs": _logprobs(body, meta, True),
                        "finish_reason": finish_reason(meta), "matched_stop": matched_stop(meta)})
    prompt_tokens = sum(len(p) for p in plan.prompts)
    completion = sum(int(f["meta_info"].get("completion_tokens", 0)) for f in finals)
    scope.add_usage(prompt_tokens, completion, sum(cached))
    await close_scope(ctx, scope, body.rid)
    return JSONResponse({"id": new_id("cmpl"), "object": "text_completion", "created": now_s(),
                         "model": ctx.model_name, "choices": choices,
                         "usage": usage(prompt_tokens, completion, sum(cached)), "system_fingerprint": None,
                         **(sglext(cached[0]) if body.return_cached_tokens_details else {})},
                        headers=scope.headers)


def _logprobs(body: CompletionRequest, meta: dict[str, Any], with_prompt: bool, start: int = 0,
              offset: int = 0) -> dict[str, Any] | None:
    if body.logprobs is None:
        return None
    entries = list(meta.get("output_token_logprobs", []))[start:]
    tops = list(meta.get("output_top_logprobs") or [])[start:]
    if body.echo and with_prompt:
        entries = list(meta.get("input_token_logprobs", [])) + entries
        tops = list(meta.get("input_top_logprobs") or []) + tops
    return completion_logprobs(entries, tops, body.logprobs, offset)


async def _stream(ctx: AppContext, scope: GenScope, body: CompletionRequest, prep: _Prepared) -> AsyncIterator[str]:
    cid, created, model = new_id("cmpl"), now_s(), ctx.model_name
    plan = prep.plan
    extra: dict[str, Any] = {"usage": None} if body.include_usage else {}
    num = len(plan.flat)
    sent_text, sent_lp, offsets = [""] * num, [0] * num, [0] * num
    started, completion, first_meta = [False] * num, [0] * num, [{} for _ in plan.prompts]
    try:
        warmed = await plan.warm_up(scope.client)
        async with contextlib.aclosing(stream_many(scope.client, plan.flat, stream=True,
                                                   progress_for=scope.progress_for)) as items:
            async for k, item in items:
                meta = item["meta_info"]
                if k % plan.n == 0:
                    first_meta[k // plan.n] = meta
                text = item["text"]
                delta = text[len(sent_text[k]):] if text.startswith(sent_text[k]) else ""
                sent_text[k] += delta
                reason = finish_reason(meta)
                echo_now = body.echo and not started[k]
                lp = _logprobs(body, meta, echo_now, sent_lp[k], offsets[k])
                if body.logprobs is not None:
                    sent_lp[k] = len(meta.get("output_token_logprobs", []))
                if echo_now:
                    delta = prep.prompt_texts[k // plan.n] + delta
                started[k] = True
                offsets[k] += len(delta)
                if not delta and reason is None and not (lp and lp["tokens"]):
                    continue
                choice: dict[str, Any] = {"index": k, "text": delta, "logprobs": lp, "finish_reason": reason}
                ext: dict[str, Any] = {}
                if reason is not None:
                    choice["matched_stop"] = matched_stop(meta)
                    completion[k] = int(meta.get("completion_tokens", 0))
                    if body.return_cached_tokens_details:  # on the finish chunk: it always has a choice
                        ext = sglext(warmed[k // plan.n] if warmed is not None
                                     else int(meta.get("cached_tokens", 0) or 0))
                yield sse(json.dumps({"id": cid, "object": "text_completion", "created": created, "model": model,
                                      "choices": [choice], "system_fingerprint": None, **extra, **ext}))
        cached = warmed if warmed is not None else [int(m.get("cached_tokens", 0) or 0) for m in first_meta]
        prompt_tokens = sum(len(p) for p in plan.prompts)
        scope.add_usage(prompt_tokens, sum(completion), sum(cached))
        if body.include_usage:
            yield sse(json.dumps({"id": cid, "object": "text_completion", "created": created, "model": model,
                                  "choices": [], "usage": usage(prompt_tokens, sum(completion), sum(cached))}))
        yield SSE_DONE
    except Exception as exc:
        err = stream_error(exc)
        scope.fail(err)
        yield sse(json.dumps(err.body()))
        yield SSE_DONE
