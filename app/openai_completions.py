"""POST /v1/completions (legacy text completions: str / list / token-id prompts, echo, logprobs): the
endpoint's shapes. The request's life around them is app.openai_request."""

from __future__ import annotations

import asyncio
from typing import Any

from app.context import AppContext
from app.errors import bad_request
from app.generation import check_priority, check_prompt, check_request_fields, new_rid
from app.openai_common import RunPlan, parse_openai_sampling, sampling_from
from app.openai_format import completion_logprobs, finish_reason, matched_stop, sglext
from app.openai_protocol import CompletionRequest
from app.openai_request import Chunks, Items, Prepared
from app.request_limits import check_sequence_count, tokenize_bounded
from app.structured.constraints import request_grammar
from engine.request_checks import check_input_ids


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


class CompletionEndpoint:
    id_prefix = "cmpl"
    object_name = "text_completion"
    chunk_object = "text_completion"

    async def prepare(self, ctx: AppContext, client: Any, body: CompletionRequest) -> Prepared:
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
        grammar = request_grammar(body)
        sampling = parse_openai_sampling(sampling_from(body, max_tokens, grammar), grammar,
                                         client.model_info.get("vocab_size"))
        want_lp = body.logprobs is not None
        plan = RunPlan.build(ids, sampling, body.rid or new_rid(), body.n, not ctx.args.disable_radix_cache,
                             return_logprob=want_lp, top_logprobs_num=body.logprobs or 0,
                             logprob_start_len=0 if (want_lp and body.echo) else -1, return_text_in_logprobs=True,
                             priority=check_priority(body.priority, ctx.args.schedule_policy))
        reserve = sum(len(p) for p in ids) + max_tokens * body.n * len(ids)
        return Prepared(plan, reserve, prompt_texts=texts)

    def choices(self, body: CompletionRequest, prepared: Prepared,
                finals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        n = prepared.plan.n
        choices = []
        for k, final in enumerate(finals):
            meta = final["meta_info"]
            prefix = prepared.prompt_texts[k // n] if body.echo else ""
            choices.append({"index": k, "text": prefix + final["text"], "logprobs": _logprobs(body, meta, True),
                            "finish_reason": finish_reason(meta), "matched_stop": matched_stop(meta)})
        return choices

    async def stream_choices(self, body: CompletionRequest, prepared: Prepared, items: Items,
                             warmed: list[int] | None) -> Chunks:
        n, num = prepared.plan.n, len(prepared.plan.flat)
        sent_text, sent_lp, offsets, started = [""] * num, [0] * num, [0] * num, [False] * num
        async for k, item in items:
            meta = item["meta_info"]
            text = item["text"]
            delta = text[len(sent_text[k]):] if text.startswith(sent_text[k]) else ""
            sent_text[k] += delta
            reason = finish_reason(meta)
            echo_now = body.echo and not started[k]
            lp = _logprobs(body, meta, echo_now, sent_lp[k], offsets[k])
            if body.logprobs is not None:
                sent_lp[k] = len(meta.get("output_token_logprobs", []))
            if echo_now:
                delta = prepared.prompt_texts[k // n] + delta
            started[k] = True
            offsets[k] += len(delta)
            if not delta and reason is None and not (lp and lp["tokens"]):
                continue
            choice: dict[str, Any] = {"index": k, "text": delta, "logprobs": lp, "finish_reason": reason}
            ext: dict[str, Any] = {}
            if reason is not None:
                choice["matched_stop"] = matched_stop(meta)
                if body.return_cached_tokens_details:  # on the finish chunk: it always has a choice
                    ext = sglext(warmed[k // n] if warmed is not None else int(meta.get("cached_tokens", 0) or 0))
            yield choice, ext


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


COMPLETION = CompletionEndpoint()
