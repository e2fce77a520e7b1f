"""POST /v1/chat/completions: the chat endpoint's shapes (rendering the conversation with its tools and
structured-output plan, choices, stream deltas). The request's life around them is app.openai_request."""

from __future__ import annotations

import asyncio
from typing import Any

from app.chat_template import render_chat_text, tokenize_prompt
from app.context import AppContext
from app.errors import bad_request
from app.gate import UNBOUNDED_RESERVE_TOKENS
from app.generation import check_priority, check_prompt, new_rid, remaining_context
from app.openai_common import RunPlan, parse_openai_sampling, sampling_from
from app.openai_format import chat_logprobs, finish_reason, matched_stop, sglext
from app.openai_protocol import ChatCompletionRequest
from app.openai_request import Chunks, Items, Prepared
from app.structured.assembler import OutputShaper
from app.structured.chat_plan import plan_chat, template_messages


class ChatEndpoint:
    id_prefix = "chatcmpl"
    object_name = "chat.completion"
    chunk_object = "chat.completion.chunk"

    async def prepare(self, ctx: AppContext, client: Any, body: ChatCompletionRequest) -> Prepared:
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
        raw = sampling_from(body, max_tokens, structure.grammar)
        if structure.keep_special_tokens:
            raw["skip_special_tokens"] = False
        sampling = parse_openai_sampling(raw, structure.grammar, client.model_info.get("vocab_size"))
        plan = RunPlan.build([input_ids], sampling, body.rid or new_rid(), body.n, not ctx.args.disable_radix_cache,
                             return_logprob=body.logprobs, top_logprobs_num=body.top_logprobs or 0,
                             return_text_in_logprobs=True,
                             priority=check_priority(body.priority, ctx.args.schedule_policy))
        return Prepared(plan, len(input_ids) + reserve * body.n,
                        new_shaper=lambda: structure.shaper(prompt_text, client.tokenizer))

    def choices(self, body: ChatCompletionRequest, prepared: Prepared,
                finals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        choices = []
        for i, final in enumerate(finals):
            meta = final["meta_info"]
            lp = None
            if body.logprobs:
                lp = chat_logprobs(meta.get("output_token_logprobs", []), meta.get("output_top_logprobs"),
                                   body.top_logprobs or 0)
            shaper = prepared.new_shaper()
            message = shaper.message(final["text"]) if shaper else {"role": "assistant", "content": final["text"]}
            reason = OutputShaper.finish_reason(finish_reason(meta), "tool_calls" in message)
            choices.append({"index": i, "message": message, "logprobs": lp, "finish_reason": reason,
                            "matched_stop": matched_stop(meta)})
        return choices

    async def stream_choices(self, body: ChatCompletionRequest, prepared: Prepared, items: Items,
                             warmed: list[int] | None) -> Chunks:
        num = len(prepared.plan.flat)
        for i in range(num):
            yield {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                   "finish_reason": None}, {}
        sent_text, sent_lp = [""] * num, [0] * num
        shapers = [prepared.new_shaper() for _ in range(num)]
        async for i, item in items:
            meta = item["meta_info"]
            text = item["text"]
            reason = finish_reason(meta)
            shaper = shapers[i]
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
            # One chunk per delta (a tool call's opening delta stands alone); the step's logprobs ride on the
            # first, the finish reason on the last.
            deltas = deltas or [{}]
            for k, delta in enumerate(deltas):
                last = k == len(deltas) - 1
                choice: dict[str, Any] = {"index": i, "delta": delta, "logprobs": lp if k == 0 else None,
                                          "finish_reason": reason if last else None}
                ext: dict[str, Any] = {}
                if last and reason is not None:
                    choice["matched_stop"] = matched_stop(meta)
                    if body.return_cached_tokens_details:  # on the finish chunk: it always has a choice
                        ext = sglext(warmed[0] if warmed is not None else int(meta.get("cached_tokens", 0) or 0))
                yield choice, ext


CHAT = ChatEndpoint()
