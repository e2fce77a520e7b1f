"""Client-side state of one in-flight request and how engine outputs fold into it (text, stop-string
trimming, logprobs with text, TTFT): the shape of a native `/generate` answer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from engine.detokenizer import IncrementalDetokenizer, hold_back_partial_stop, trim_stop_string
from engine.messages import ReqOutput
from engine.sampling_params import SamplingParams


@dataclass
class ReqState:
    """Client-side state of one in-flight request; `on_output` callbacks receive it (public, stable:
    rid, input_ids, sampling, created (perf_counter at submission), output_ids)."""

    rid: str
    input_ids: list[int]
    sampling: SamplingParams
    return_logprob: bool
    return_text_in_logprobs: bool
    stream: bool
    detok: IncrementalDetokenizer | None
    created: float = field(default_factory=time.perf_counter)
    output_ids: list[int] = field(default_factory=list)
    output_logprobs: list[list[Any]] = field(default_factory=list)
    output_top_logprobs: list[Any] = field(default_factory=list)
    input_logprobs: list[list[Any]] | None = None
    input_top_logprobs: list[Any] | None = None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    first_token_time: float | None = None



def absorb(state: ReqState, out: ReqOutput, tokenizer: Any) -> dict[str, Any]:
    """Folds one engine output into `state`; returns the native `/generate` dict so far."""
    if out.new_token_ids and state.first_token_time is None:
        state.first_token_time = time.perf_counter()
    state.output_ids.extend(out.new_token_ids)
    if out.output_logprobs:
        state.output_logprobs.extend(out.output_logprobs)
    if out.output_top_logprobs:
        state.output_top_logprobs.extend(out.output_top_logprobs)
    if out.input_logprobs is not None:
        state.input_logprobs = out.input_logprobs
        state.input_top_logprobs = out.input_top_logprobs
    text = ""
    finish_reason = out.finish_reason
    if state.detok is not None:
        text = state.detok.add(out.new_token_ids, is_final=out.finished)
        stop = state.sampling.stop
        if stop and not state.sampling.no_stop_trim:
            text, matched = trim_stop_string(text, stop)
            if matched is not None and out.finished and finish_reason and finish_reason.get("type") == "stop":
                finish_reason = {"type": "stop", "matched": matched}
            if not out.finished:
                text = hold_back_partial_stop(text, stop)
    meta: dict[str, Any] = {
        "id": state.rid,
        "finish_reason": finish_reason if out.finished else None,
        "prompt_tokens": out.prompt_tokens or len(state.input_ids),
        "completion_tokens": len(state.output_ids),
        "cached_tokens": out.cached_tokens,
        "e2e_latency": time.perf_counter() - state.created,
    }
    if out.spec_verify_ct > 0:
        # SGLang's names: accept rate counts drafts only; accept length is tokens per verify pass (its accepted
        # drafts plus the target's own token). Not completion tokens / passes, as SGLang computes it: here a
        # request also decodes without drafts (paused after failed drafts, or beside a request that cannot
        # speculate), and those tokens would inflate it.
        meta["spec_verify_ct"] = out.spec_verify_ct
        meta["spec_num_proposed_drafts"] = out.spec_num_proposed_drafts
        meta["spec_num_correct_drafts"] = out.spec_num_correct_drafts
        meta["spec_accept_rate"] = out.spec_num_correct_drafts / max(out.spec_num_proposed_drafts, 1)
        meta["spec_accept_length"] = 1 + out.spec_num_correct_drafts / out.spec_verify_ct
    if state.first_token_time is not None:
        meta["ttft"] = state.first_token_time - state.created
    if state.return_logprob:
        meta["input_token_logprobs"] = _with_text(state.input_logprobs or [], state, tokenizer)
        meta["output_token_logprobs"] = _with_text(state.output_logprobs, state, tokenizer)
        meta["input_top_logprobs"] = [_with_text(t, state, tokenizer) if t else None
                                      for t in (state.input_top_logprobs or [])]
        meta["output_top_logprobs"] = [_with_text(t, state, tokenizer) if t else None
                                       for t in state.output_top_logprobs]
    return {"text": text, "output_ids": list(state.output_ids), "meta_info": meta}

def _with_text(pairs: list[list[Any]], state: ReqState, tokenizer: Any) -> list[list[Any]]:
    if not state.return_text_in_logprobs or tokenizer is None:
        return [[lp, tid, None] for lp, tid in pairs]
    return [[lp, tid, tokenizer.decode([tid])] for lp, tid in pairs]
