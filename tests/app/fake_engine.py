"""A stand-in for engine.client.EngineClient with the same surface, for fast in-process app tests.

It "generates" a deterministic token sequence (no model), detokenizes with the real tokenizer and
the engine's incremental detokenizer, and can be told to die or to fail its start.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from transformers import AutoTokenizer

from engine.client import EngineDeadError, EngineStartError
from engine.detokenizer import IncrementalDetokenizer, hold_back_partial_stop, trim_stop_string
from engine.messages import FlushCacheOutMsg
from engine.sampling_params import SamplingParams

FIRST_TEXT_TOKEN = 7  # the tiny tokenizer's special tokens are ids 0..6


@dataclass
class FakeBehaviour:
    """Knobs a test turns: shared by every client a factory builds."""

    step_s: float = 0.002
    start_delay_s: float = 0.0
    # When set, start() also waits until the test sets this event: "still starting" without a race
    # against a timer on a loaded machine.
    start_gate: threading.Event | None = None
    fail_start: bool = False
    context_length: int = 512
    # Token ids to "generate" instead of the built-in sequence (e.g. the tokenization of a text).
    script: list[int] | None = None
    # A scripted output ends like a real model's: "stop" on EOS once the script is spent.
    stop_after_script: bool = False


class FakeEngineClient:
    def __init__(self, args: Any, behaviour: FakeBehaviour | None = None) -> None:
        self.server_args = args
        self.behaviour = behaviour or FakeBehaviour()
        self.tokenizer: Any = None
        self.model_info: dict[str, Any] = {}
        self.is_alive = False
        self.on_death: list[Callable[[str], None]] = []
        self.on_output: list[Callable[[Any, Any], None]] = []
        self._queues: dict[str, asyncio.Queue] = {}
        self._aborted: set[str] = set()
        self._seen: list[tuple[int, ...]] = []
        self.pid = 40000 + uuid.uuid4().int % 1000

    async def start(self, timeout: float = 600.0) -> None:
        await asyncio.sleep(self.behaviour.start_delay_s)
        while self.behaviour.start_gate is not None and not self.behaviour.start_gate.is_set():
            await asyncio.sleep(0.01)
        if self.behaviour.fail_start:
            raise EngineStartError("fake engine refused to start")
        if not self.server_args.skip_tokenizer_init:
            self.tokenizer = AutoTokenizer.from_pretrained(self.server_args.resolved_tokenizer_path)
        vocab = len(self.tokenizer) if self.tokenizer is not None else 384
        self.model_info = {"model_path": self.server_args.model_path, "max_context_length":
                           self.behaviour.context_length, "vocab_size": vocab, "eos_token_ids": [2],
                           "max_total_tokens": 4096}
        self.is_alive = True

    async def stop(self) -> None:
        self.is_alive = False
        self._fail_all("engine stopped")

    def die(self, reason: str = "fake rank died") -> None:
        self.is_alive = False
        self._fail_all(reason)
        for cb in self.on_death:
            cb(reason)

    def _fail_all(self, reason: str) -> None:
        for q in self._queues.values():
            q.put_nowait(EngineDeadError(reason))
        self._queues.clear()

    def rank_pids(self) -> list[int]:
        return [self.pid]

    @property
    def num_inflight(self) -> int:
        return len(self._queues)

    @property
    def inflight_rids(self) -> list[str]:
        return list(self._queues)

    async def abort(self, rid: str) -> None:
        self._aborted.add(rid)

    async def flush_cache(self) -> FlushCacheOutMsg:
        self._check()
        self._seen.clear()
        return FlushCacheOutMsg(success=not self._queues, message="")

    async def get_server_info(self) -> dict[str, Any]:
        self._check()
        return {"num_running_reqs": len(self._queues), "num_queued_reqs": 0, "token_usage": 0.0,
                "kv_used_tokens": 0, "kv_total_tokens": 4096, "cache_hit_rate": 0.0, "gen_throughput": 0.0}

    def _check(self) -> None:
        if not self.is_alive:
            raise EngineDeadError("engine is not running")

    def _cached(self, ids: list[int]) -> int:
        best = 0
        for seen in self._seen:
            n = 0
            while n < min(len(seen), len(ids) - 1) and seen[n] == ids[n]:
                n += 1
            best = max(best, n)
        self._seen.append(tuple(ids))
        return best

    @staticmethod
    def token_at(input_ids: list[int], i: int, vocab: int) -> int:
        return FIRST_TEXT_TOKEN + (sum(input_ids) * 31 + i * 7) % (vocab - FIRST_TEXT_TOKEN)

    async def generate(self, input_ids: list[int], sampling: SamplingParams, rid: str | None = None,
                       return_logprob: bool = False, logprob_start_len: int = -1, top_logprobs_num: int = 0,
                       return_text_in_logprobs: bool = False, stream: bool = False,
                       progress: Any = None, priority: int = 0) -> AsyncIterator[dict[str, Any]]:
        self._check()
        rid = rid or uuid.uuid4().hex
        if rid in self._queues:
            raise ValueError(f"request id {rid!r} is already in flight")
        queue: asyncio.Queue = asyncio.Queue()
        self._queues[rid] = queue
        created = time.perf_counter()
        cached = self._cached(input_ids)
        detok = IncrementalDetokenizer(self.tokenizer, sampling.skip_special_tokens) if self.tokenizer else None
        vocab = self.model_info["vocab_size"]
        out_ids: list[int] = []

        def text_of(tid: int) -> str | None:
            return self.tokenizer.decode([tid]) if return_text_in_logprobs and self.tokenizer else None

        def result(finish: dict[str, Any] | None) -> dict[str, Any]:
            text = detok.text if detok else ""
            if detok and sampling.stop:
                text, matched = trim_stop_string(text, sampling.stop)
                if matched is not None and finish is None:
                    pass
                if finish is None:
                    text = hold_back_partial_stop(text, sampling.stop)
            meta: dict[str, Any] = {"id": rid, "finish_reason": finish, "prompt_tokens": len(input_ids),
                                    "completion_tokens": len(out_ids), "cached_tokens": cached,
                                    "e2e_latency": time.perf_counter() - created}
            if return_logprob:
                start = len(input_ids) if logprob_start_len < 0 else logprob_start_len
                meta["input_token_logprobs"] = [[None if p == 0 else -0.5, input_ids[p], text_of(input_ids[p])]
                                                for p in range(start, len(input_ids))]
                meta["input_top_logprobs"] = [None] * (len(input_ids) - start)
                meta["output_token_logprobs"] = [[-1.0, t, text_of(t)] for t in out_ids]
                meta["output_top_logprobs"] = [[[-1.0 - k, t + k if t + k < vocab else t, text_of(t)]
                                                for k in range(top_logprobs_num)] for t in out_ids]
            return {"text": text, "output_ids": list(out_ids), "meta_info": meta}

        try:
            script = self.behaviour.script
            for i in range(sampling.max_new_tokens):
                if script and self.behaviour.stop_after_script and i == len(script):
                    yield result({"type": "stop", "matched": self.tokenizer.eos_token_id})
                    return
                await asyncio.sleep(self.behaviour.step_s)
                if not queue.empty():
                    item = queue.get_nowait()
                    raise item
                if rid in self._aborted:
                    self._aborted.discard(rid)
                    yield result({"type": "abort", "message": "aborted"})
                    return
                tid = script[i % len(script)] if script else self.token_at(input_ids, i, vocab)
                out_ids.append(tid)
                if progress is not None:
                    progress(len(out_ids))
                if detok:
                    detok.add([tid], is_final=i == sampling.max_new_tokens - 1)
                if stream and i < sampling.max_new_tokens - 1:
                    yield result(None)
            if not queue.empty():
                raise queue.get_nowait()
            yield result({"type": "length", "length": sampling.max_new_tokens})
        finally:
            self._queues.pop(rid, None)
