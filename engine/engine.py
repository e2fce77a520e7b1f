"""Engine: the offline, in-process API (like `sgl.Engine` / `vllm.LLM`).

    with Engine(model_path="models/demo", tp_size=1) as engine:
        out = engine.generate("The list", {"max_new_tokens": 16, "temperature": 0})

Returns the same dicts as the native `/generate`: a list in, a list out. An asyncio loop runs in a
background thread and drives an `EngineClient`, so the sync API and `async_generate` share one path.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from engine.args import ServerArgs
from engine.client import EngineClient
from engine.grammar import check_grammar_spec
from engine.sampling_params import SamplingParams


class EngineRequestError(ValueError):
    """A request was rejected (bad sampling parameters, prompt too long, ...)."""


class Engine:
    def __init__(self, **kwargs: Any) -> None:
        self.server_args = ServerArgs(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tessera-engine-loop", daemon=True)
        self._thread.start()
        self.client = EngineClient(self.server_args)
        try:
            self._run(self.client.start())
        except BaseException:
            self._stop_loop()
            raise
        self.tokenizer = self.client.tokenizer

    # ---- plumbing -------------------------------------------------------------------------
    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def shutdown(self) -> None:
        if self._thread.is_alive():
            self._run(self.client.stop())
            self._stop_loop()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __del__(self) -> None:  # best effort: child processes are daemons anyway
        try:
            self.shutdown()
        except Exception:
            pass

    # ---- request expansion ----------------------------------------------------------------
    def _prepare(self, prompt, input_ids, sampling_params) -> tuple[list[list[int]], list[SamplingParams], bool]:
        if (prompt is None) == (input_ids is None):
            raise EngineRequestError("pass exactly one of prompt or input_ids")
        if prompt is not None:
            is_batch = isinstance(prompt, list)
            prompts = prompt if is_batch else [prompt]
            if self.tokenizer is None:
                raise EngineRequestError("text prompts need a tokenizer (skip_tokenizer_init is set)")
            ids = [self.tokenizer.encode(p) for p in prompts]
        else:
            is_batch = bool(input_ids) and isinstance(input_ids[0], list)
            ids = input_ids if is_batch else [input_ids]
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(ids)
        if len(params) != len(ids):
            raise EngineRequestError("sampling_params list must match the number of prompts")
        parsed = [SamplingParams.from_dict(p) for p in params]
        for sp in parsed:
            if sp.grammar is not None:
                check_grammar_spec(*sp.grammar)  # raises GrammarSpecError (a SamplingParamsError)
        return [list(x) for x in ids], parsed, is_batch

    async def _one(self, ids, sp, **kw) -> list[dict[str, Any]]:
        """All n samples of one prompt; with n > 1 the prompt is prefilled once and shared."""
        if sp.n > 1:
            warm = SamplingParams.from_dict({**sp.to_dict(), "max_new_tokens": 0, "n": 1})
            async for _ in self.client.generate(ids, warm):
                pass
        outs = await asyncio.gather(*[self._last(ids, sp, **kw) for _ in range(sp.n)])
        return list(outs)

    async def _last(self, ids, sp, **kw) -> dict[str, Any]:
        last = None
        async for out in self.client.generate(ids, sp, **kw):
            last = out
        return last

    # ---- public API -----------------------------------------------------------------------
    async def async_generate(self, prompt=None, sampling_params=None, input_ids=None, return_logprob=False,
                             logprob_start_len=-1, top_logprobs_num=0, return_text_in_logprobs=False,
                             stream=False):
        """Async twin of `generate`; with stream=True returns an async iterator of deltas."""
        ids, params, is_batch = self._prepare(prompt, input_ids, sampling_params)
        kw = dict(return_logprob=return_logprob, logprob_start_len=logprob_start_len,
                  top_logprobs_num=top_logprobs_num, return_text_in_logprobs=return_text_in_logprobs)
        if stream:
            if is_batch or params[0].n > 1:
                raise EngineRequestError("stream=True takes a single prompt with n=1")
            return self._stream(ids[0], params[0], kw)
        groups = await asyncio.gather(*[self._one(i, p, **kw) for i, p in zip(ids, params)])
        flat = [o for g in groups for o in g]
        return flat if is_batch or len(flat) > 1 else flat[0]

    async def _stream(self, ids, sp, kw) -> AsyncIterator[dict[str, Any]]:
        text_len = ids_len = 0
        async for out in self.client.generate(ids, sp, stream=True, **kw):
            delta = {**out, "text": out["text"][text_len:], "output_ids": out["output_ids"][ids_len:]}
            text_len, ids_len = len(out["text"]), len(out["output_ids"])
            yield delta

    def generate(self, prompt=None, sampling_params=None, input_ids=None, return_logprob=False,
                 logprob_start_len=-1, top_logprobs_num=0, return_text_in_logprobs=False, stream=False):
        """Native `/generate` dicts: one for a single prompt, a list for a list (n > 1 gives n per prompt).
        With stream=True returns an iterator of incremental dicts (new text and ids per chunk)."""
        coro = self.async_generate(prompt, sampling_params, input_ids, return_logprob, logprob_start_len,
                                   top_logprobs_num, return_text_in_logprobs, stream)
        result = self._run(coro)
        if stream:
            return self._sync_iter(result)
        return result

    def _sync_iter(self, agen) -> Iterator[dict[str, Any]]:
        while True:
            try:
                yield self._run(agen.__anext__())
            except StopAsyncIteration:
                return

    def flush_cache(self) -> bool:
        return self._run(self.client.flush_cache()).success

    def get_server_info(self) -> dict[str, Any]:
        return {**self.client.model_info, **self._run(self.client.get_server_info())}
