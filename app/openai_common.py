"""What chat and completions share: OpenAI fields → SGLang sampling keys, and the run plan
(prompts × n samples, with a prefill-only warm-up so the n samples share the prompt's KV)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from app.context import AppContext
from app.errors import APIError
from app.generation import (
    EngineReq,
    ProgressFor,
    collect_many,
    engine_error,
    expand_n,
    parse_sampling,
    warm_prefix,
)
from app.openai_protocol import ChatCompletionRequest, CompletionRequest
from app.request_scope import GenScope
from app.structured.constraints import Grammar

# SamplingParams names → the OpenAI names a client used, for error messages.
RENAMES = {"max_new_tokens": "max_tokens", "min_new_tokens": "min_tokens", "sampling_seed": "seed"}


def sampling_from(body: ChatCompletionRequest | CompletionRequest, max_tokens: int,
                  grammar: Grammar | None = None) -> dict[str, Any]:
    """SGLang sampling keys; `grammar` is the request's one constraint (app.structured.constraints)."""
    raw: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "min_new_tokens": min(body.min_tokens, max_tokens),
        "stop": body.stop,
        "stop_token_ids": body.stop_token_ids,
        "ignore_eos": body.ignore_eos,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "min_p": body.min_p,
        "frequency_penalty": body.frequency_penalty,
        "presence_penalty": body.presence_penalty,
        "repetition_penalty": body.repetition_penalty,
        "logit_bias": body.logit_bias,
        "sampling_seed": body.seed,
        "skip_special_tokens": body.skip_special_tokens,
        "no_stop_trim": body.no_stop_trim,
    }
    if body.min_tokens > max_tokens:
        raw["min_new_tokens"] = body.min_tokens  # let validation name it
    if grammar is not None:
        raw.update(grammar.sampling_keys())
    return raw


def parse_openai_sampling(raw: dict[str, Any], grammar: Grammar | None = None,
                          vocab_size: int | None = None) -> Any:
    # A grammar error names the field the client used (response_format, tool_choice, ...).
    return parse_sampling(raw, {**RENAMES, **({grammar.kind: grammar.param} if grammar else {})}, vocab_size)


@dataclass
class RunPlan:
    """prompts × n engine sequences; `flat[k]` is sample `k % n` of prompt `k // n`."""

    prompts: list[list[int]]
    flat: list[EngineReq]
    n: int
    warm: bool

    @classmethod
    def build(cls, prompts: list[list[int]], sampling: Any, rid: str, n: int, warm_enabled: bool,
              **logprob_args: Any) -> RunPlan:
        flat: list[EngineReq] = []
        for p, ids in enumerate(prompts):
            base_rid = rid if len(prompts) == 1 else f"{rid}-p{p}"
            flat.extend(expand_n(EngineReq(ids, sampling, base_rid, **logprob_args), n))
        return cls(prompts, flat, n, warm=warm_enabled and n > 1)

    async def warm_up(self, client: Any) -> list[int] | None:
        """Prefills each prompt once; returns the cached-token count each prompt found."""
        if not self.warm:
            return None
        finals = await asyncio.gather(*(warm_prefix(client, ids, self.flat[p * self.n].rid)
                                        for p, ids in enumerate(self.prompts)))
        return [int(f.get("meta_info", {}).get("cached_tokens", 0)) for f in finals]

    async def run(self, client: Any, progress_for: ProgressFor | None = None) -> tuple[list[dict[str, Any]], list[int]]:
        warmed = await self.warm_up(client)
        finals = await collect_many(client, self.flat, progress_for)
        return finals, self.cached(warmed, finals)

    def cached(self, warmed: list[int] | None, finals: list[dict[str, Any]]) -> list[int]:
        """Prompt tokens each prompt found in the cache before this request arrived."""
        if warmed is not None:
            return warmed
        return [int(finals[p * self.n].get("meta_info", {}).get("cached_tokens", 0) or 0)
                for p in range(len(self.prompts))]

    @property
    def engine_rids(self) -> set[str]:
        return {r.rid for r in self.flat}


async def close_scope(ctx: AppContext, scope: GenScope, rid: str | None) -> None:
    """Ends a chat or completion request: forgets its rid group (for /abort_request) and settles its scope."""
    if rid:
        ctx.rid_groups.pop(rid, None)
    await scope.close()


async def fail_scope(ctx: AppContext, scope: GenScope, rid: str | None, exc: BaseException) -> APIError | None:
    """A chat or completion request failed before its response began: records the failure, ends the
    scope, and returns the OpenAI-shaped error to raise instead of `exc` (None: re-raise `exc`)."""
    scope.fail(exc)
    await close_scope(ctx, scope, rid)
    return engine_error(exc)
