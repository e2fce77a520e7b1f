"""Running requests on the single-sequence engine: sampling checks, `n`/list expansion, stream merging,
prompt checks against the context length, and aborting when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from fastapi import Request

from app.errors import APIError, bad_request
from engine.client import EngineDeadError, RequestCutOffError
from engine.grammar import GrammarSpecError, check_grammar_spec
from engine.sampling_params import SamplingParams, SamplingParamsError

logger = logging.getLogger(__name__)
T = TypeVar("T")
ProgressFor = Callable[[str], Callable[[int], None]]


class ClientDisconnected(APIError):
    """The HTTP client went away; its engine requests were aborted. Recorded as 499 (nginx's "client
    closed request"); nobody reads the response."""

    def __init__(self) -> None:
        super().__init__(499, "The client closed the request before it finished.", code="client_closed_request")


@dataclass
class EngineReq:
    """One engine sequence: what `EngineClient.generate` takes."""

    input_ids: list[int]
    sampling: SamplingParams
    rid: str
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    return_text_in_logprobs: bool = False
    priority: int = 0


def check_priority(priority: int | None, schedule_policy: str) -> int:
    """`priority` needs `--schedule-policy priority`; elsewhere a non-zero value is a 400, not ignored."""
    if priority is None:
        return 0
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise bad_request("'priority' must be an integer", "priority")
    if priority != 0 and schedule_policy != "priority":
        raise bad_request("'priority' needs a server started with --schedule-policy priority", "priority")
    return priority


def new_rid() -> str:
    return uuid.uuid4().hex


def parse_sampling(raw: dict[str, Any], rename: dict[str, str] | None = None,
                   vocab_size: int | None = None) -> SamplingParams:
    """SamplingParams.from_dict (plus the vocabulary checks when `vocab_size` is known) with errors as
    400s naming the parameter the client sent."""
    try:
        params = SamplingParams.from_dict(raw)
        if params.grammar is not None:
            # Bad or unenforceable grammars are 400s here, before anything reaches the engine.
            check_grammar_spec(*params.grammar)
        if vocab_size:
            params.validate(vocab_size)
        return params
    except GrammarSpecError as exc:  # named as the client spelled it (response_format, tool_choice, ...)
        raise bad_request(str(exc), (rename or {}).get(exc.param or "", exc.param)) from None
    except SamplingParamsError as exc:
        param = (rename or {}).get(exc.param or "", exc.param)
        message = str(exc)
        for ours, theirs in (rename or {}).items():
            message = message.replace(ours, theirs)
        raise bad_request(message, param) from None
    except Exception as exc:  # wrong value types inside the dict trip the parser in many ways
        raise bad_request(f"invalid sampling parameters: {exc}", "sampling_params") from None


def check_prompt(input_ids: list[int], max_new_tokens: int, model_info: dict[str, Any], param: str,
                 max_tokens_param: str = "max_tokens") -> None:
    """Empty prompts, ids outside the vocabulary and prompt + max tokens over the context are 400s."""
    if not input_ids:
        raise bad_request("The prompt is empty (it tokenizes to no tokens).", param)
    vocab = model_info.get("vocab_size")
    bad = next((t for t in input_ids if t < 0 or (vocab and t >= vocab)), None)
    if bad is not None:
        raise bad_request(f"token id {bad} is outside the vocabulary (size {vocab})", param)
    limit = model_info.get("max_context_length")
    if limit and len(input_ids) >= limit:
        # The engine needs a position past the prompt even for max_tokens 0 (the prefill samples the next token).
        raise APIError(
            400, f"This model's maximum context length is {limit} tokens. However, the prompt has {len(input_ids)} "
                 f"tokens, and a prompt must be shorter than the context. Please reduce the prompt.",
            param=param, code="context_length_exceeded")
    if limit and len(input_ids) + max_new_tokens > limit:
        raise APIError(
            400, f"This model's maximum context length is {limit} tokens. However, you requested "
                 f"{len(input_ids) + max_new_tokens} tokens ({len(input_ids)} in the prompt, {max_new_tokens} "
                 f"for the completion). Please reduce the prompt or {max_tokens_param}.",
            param=max_tokens_param, code="context_length_exceeded")


def check_request_fields(fn: Any, *args: Any) -> None:
    """Runs one of engine.request_checks' checks; its error becomes a 400 naming the field."""
    try:
        fn(*args)
    except SamplingParamsError as exc:
        raise bad_request(str(exc), exc.param) from None


def remaining_context(input_ids: list[int], model_info: dict[str, Any]) -> int:
    limit = model_info.get("max_context_length") or (len(input_ids) + 16)
    return max(limit - len(input_ids), 0)


def expand_n(req: EngineReq, n: int) -> list[EngineReq]:
    """n samples of one prompt as n engine sequences; a seed is offset so the samples differ."""
    if n == 1:
        return [req]
    out = []
    for i in range(n):
        sampling = replace(req.sampling, n=1)
        if sampling.sampling_seed is not None:
            sampling.sampling_seed += i
        out.append(replace(req, rid=f"{req.rid}-{i}", sampling=sampling))
    return out


async def warm_prefix(client: Any, input_ids: list[int], rid: str) -> dict[str, Any]:
    """A prefill-only request: the n samples that follow then share the prompt's KV via the radix cache."""
    final: dict[str, Any] = {}
    async for item in client.generate(input_ids, SamplingParams(max_new_tokens=0), rid=f"{rid}-prefill"):
        final = item
    return final


def engine_error(exc: BaseException) -> APIError | None:
    if isinstance(exc, RequestCutOffError):
        return APIError(503, str(exc), code="server_shutting_down", headers={"Retry-After": "1"})
    if isinstance(exc, EngineDeadError):
        return APIError(503, f"The engine stopped while the request was running ({exc}); retry.",
                        code="engine_unavailable", headers={"Retry-After": "1"})
    if isinstance(exc, ValueError) and "already in flight" in str(exc):
        return bad_request(str(exc), "rid")
    return None


def stream_error(exc: Exception) -> APIError:
    """The error event sent when a stream fails after its 200 went out."""
    mapped = engine_error(exc)
    if mapped is not None:
        return mapped
    if isinstance(exc, APIError):
        return exc
    logger.error("stream failed", exc_info=exc)
    return APIError(500, "internal server error", code="internal_error")


async def stream_many(client: Any, reqs: list[EngineReq], stream: bool,
                      progress_for: ProgressFor | None = None) -> AsyncIterator[tuple[int, dict[str, Any]]]:
    """Runs the sequences concurrently; yields (index, cumulative dict) as outputs arrive.

    Closing this iterator cancels every sequence, which aborts them in the engine. `progress_for(rid)`
    gives each sequence's token-count callback (usage settles to the tokens produced, also when aborted).
    """
    queue: asyncio.Queue[tuple[int, dict[str, Any] | None, BaseException | None]] = asyncio.Queue()

    async def pump(i: int, r: EngineReq) -> None:
        try:
            gen = client.generate(r.input_ids, r.sampling, rid=r.rid, return_logprob=r.return_logprob,
                                  logprob_start_len=r.logprob_start_len, top_logprobs_num=r.top_logprobs_num,
                                  return_text_in_logprobs=r.return_text_in_logprobs, stream=stream,
                                  **({"progress": progress_for(r.rid)} if progress_for else {}),
                                  **({"priority": r.priority} if r.priority else {}))
            async with contextlib.aclosing(gen) as items:
                async for item in items:
                    rejected = request_rejection(item)
                    if rejected is not None:
                        raise rejected
                    queue.put_nowait((i, item, None))
            queue.put_nowait((i, None, None))
        except Exception as exc:
            queue.put_nowait((i, None, exc))
        except BaseException:
            # A cancellation from below (not from stream_many, which is the only one that cancels pumps
            # and no longer reads the queue) must still end the consumer: a pump that vanishes silently
            # leaves its HTTP request waiting forever.
            queue.put_nowait((i, None, EngineDeadError("the request was cancelled inside the server")))
            raise

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(reqs)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item, exc = await queue.get()
            if exc is not None:
                raise exc
            if item is None:
                remaining -= 1
                continue
            yield i, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def request_rejection(item: dict[str, Any]) -> APIError | None:
    """An engine abort that carries an HTTP status (a grammar that failed to compile or timed out)
    is that client error, not a finished generation."""
    reason = (item.get("meta_info") or {}).get("finish_reason") or {}
    if reason.get("type") == "abort" and isinstance(reason.get("status_code"), int):
        return APIError(reason["status_code"], str(reason.get("message", "request rejected")),
                        param=reason.get("param"))
    return None


async def collect_many(client: Any, reqs: list[EngineReq],
                       progress_for: ProgressFor | None = None) -> list[dict[str, Any]]:
    finals: list[dict[str, Any]] = [{} for _ in reqs]
    async with contextlib.aclosing(stream_many(client, reqs, stream=False, progress_for=progress_for)) as items:
        async for i, item in items:
            finals[i] = item
    return finals


async def _until_disconnect(request: Request) -> None:
    """Returns when the client goes away. The body is already read, so the next ASGI message on this
    request can only be `http.disconnect`."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def abort_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Awaits `work`; if the client disconnects first, cancels it (aborting its engine requests)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        logger.info("client disconnected; aborting %s %s", request.method, request.url.path)
        raise ClientDisconnected()
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
