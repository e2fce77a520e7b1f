"""EngineClient: the asyncio side of the engine, living in the caller's process (Engine or API server).

It starts one rank process per TP rank, talks to rank 0 over ZMQ (msgpack messages from
`engine.messages`), turns token ids into text incrementally, and hands each request's results to
its caller as native `/generate` dicts. If a rank process dies, every in-flight request ends with
`EngineDeadError` (never a hang) and `on_death` callbacks run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import zmq
import zmq.asyncio

from engine.args import ServerArgs
from engine.detokenizer import IncrementalDetokenizer
from engine.ipc import IpcConfig, find_free_port
from engine.messages import (
    AbortReqMsg,
    BatchOutMsg,
    EngineErrorMsg,
    FlushCacheOutMsg,
    FlushCacheReqMsg,
    GenerateReqMsg,
    GetInfoReqMsg,
    InfoOutMsg,
    ReadyMsg,
    ReqOutput,
    ShutdownReqMsg,
    decode,
    encode,
)
from engine.model_config import preflight
from engine.rank_launcher import RankProcess, local_ranks
from engine.req_state import ReqState, absorb
from engine.sampling_params import SamplingParams
from engine.tokenizer import load_tokenizer
from engine.turn_sender import TurnSender

logger = logging.getLogger(__name__)
# How long an abandoned request waits for the engine to report the tokens it had produced.
ABORT_REPLY_TIMEOUT_S = 5.0


class EngineStartError(RuntimeError):
    """The engine could not start; the message is one line for the operator."""


class EngineDeadError(RuntimeError):
    """The engine process died while the request was in flight."""


class RequestCutOffError(RuntimeError):
    """The request was ended by the server (the shutdown drain timed out), not by the engine."""


class EngineClient:
    def __init__(self, server_args: ServerArgs) -> None:
        self.server_args = server_args
        self.tokenizer = None
        self.model_info: dict[str, Any] = {}
        self.is_alive = False
        self.on_death: list[Callable[[str], None]] = []
        self.on_output: list[Callable[[ReqState, ReqOutput], None]] = []
        self._states: dict[str, ReqState] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._procs: list[RankProcess] = []
        self._tasks: list[asyncio.Task] = []
        self._ctx: zmq.asyncio.Context | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._stopping = False
        # Resolved when the engine dies or stops: a send racing it must not wait for a peer that is gone.
        self._dead: asyncio.Future | None = None
        self._death_reason = "engine is not running"

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self, timeout: float = 600.0) -> None:
        args = self.server_args
        try:
            await asyncio.to_thread(preflight, args)
        except (ValueError, RuntimeError) as exc:
            raise EngineStartError(str(exc)) from None
        if not args.skip_tokenizer_init:
            self.tokenizer = await asyncio.to_thread(
                load_tokenizer, args.resolved_tokenizer_path, args.trust_remote_code)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="tessera-ipc-")
        ipc = IpcConfig(
            request_addr=f"ipc://{self._tmpdir.name}/req",
            output_addr=f"ipc://{self._tmpdir.name}/out",
            dist_port=find_free_port(),
        )
        self._dead = asyncio.get_running_loop().create_future()
        self._ctx = zmq.asyncio.Context()
        self._send = self._ctx.socket(zmq.PUSH)
        self._send.bind(ipc.request_addr)
        self._sender = TurnSender(self._send)
        self._recv = self._ctx.socket(zmq.PULL)
        self._recv.bind(ipc.output_addr)

        # Fresh interpreters (not multiprocessing's spawn), so callers need no `__main__` guard.
        payload = json.dumps({"args": args.to_dict(), "ipc": ipc.to_dict()})
        for rank in local_ranks(args):
            self._procs.append(RankProcess(rank, payload))
        try:
            await self._wait_ready(timeout)
        except BaseException:
            # Not serving yet (or cancelled by a shutdown mid-restart): nothing to drain, stop the ranks now.
            await self.stop(grace_s=2.0)
            raise
        self.is_alive = True
        self._tasks = [asyncio.create_task(self._recv_loop()), asyncio.create_task(self._watchdog())]

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if await self._recv.poll(200):
                msg = decode(await self._recv.recv())
                if isinstance(msg, ReadyMsg):
                    self.model_info = msg.info
                    return
                if isinstance(msg, EngineErrorMsg):
                    raise EngineStartError(msg.message)
            dead = [p for p in self._procs if not p.is_alive()]
            if dead:
                raise EngineStartError(f"engine rank process exited with code {dead[0].exitcode} during start-up")
            if time.monotonic() > deadline:
                raise EngineStartError(f"engine did not become ready within {timeout:.0f}s")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Asks rank 0 to shut down, waits up to `grace_s`, then kills what is left. Every step runs
        even when the calling task is being cancelled, so no rank outlives a stop."""
        self._stopping = True
        self.is_alive = False
        self._mark_dead("engine stopped")
        for task in self._tasks:
            task.cancel()
        if self._ctx is not None and any(p.is_alive() for p in self._procs):
            try:
                await self._send.send(encode(ShutdownReqMsg()), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        deadline = time.monotonic() + grace_s
        for proc in self._procs:
            while proc.is_alive() and time.monotonic() < deadline:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    deadline = 0.0  # cancelled mid-stop: kill now rather than leave ranks behind
            proc.kill()
            proc.join(timeout=5)
        self._procs = []
        self._fail_all("engine stopped")
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def rank_pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    async def _watchdog(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.25)
            dead = [p for p in self._procs if not p.is_alive()]
            if dead and not self._stopping:
                reason = f"engine process {dead[0].name} died (exit code {dead[0].exitcode})"
                logger.error(reason)
                self.is_alive = False
                self._mark_dead(reason)
                self._fail_all(reason)
                for cb in self.on_death:
                    cb(reason)
                return

    def _mark_dead(self, reason: str) -> None:
        self._death_reason = reason
        if self._dead is not None and not self._dead.done():
            self._dead.set_result(reason)

    async def _send_msg(self, msg: Any) -> None:
        """Sends to rank 0, or raises EngineDeadError if the engine dies first (a PUSH socket whose peer
        is gone would wait forever). Messages sent in one event-loop turn leave together (`TurnSender`)."""
        data = msg if isinstance(msg, bytes) else encode(msg)
        self._check_alive()
        send = self._sender.send(data)
        dead = self._dead
        if dead is not None:
            await asyncio.wait({send, dead}, return_when=asyncio.FIRST_COMPLETED)
        elif not send.done():
            await asyncio.wait({send})
        # pyzmq cancels a pending send when stop() destroys the context: that is the engine going away,
        # not this task being cancelled, and must not surface as a CancelledError nobody handles.
        if send.done() and not send.cancelled():
            exc = send.exception()
            if exc is not None:
                raise EngineDeadError(f"{self._death_reason} ({exc})")
            return
        raise EngineDeadError(self._death_reason)

    def cut_off(self, reason: str) -> int:
        """Ends every in-flight request now with RequestCutOffError (the server's drain timed out);
        their generators abort them in the engine. Returns how many were cut off."""
        states = list(self._states.values())
        for state in states:
            state.queue.put_nowait(RequestCutOffError(reason))
        return len(states)

    def _fail_all(self, reason: str) -> None:
        for state in list(self._states.values()):
            state.queue.put_nowait(EngineDeadError(reason))
        self._states.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(EngineDeadError(reason))
        self._pending.clear()

    # ---- receiving ------------------------------------------------------------------------
    async def _recv_loop(self) -> None:
        while True:
            msg = decode(await self._recv.recv())
            if isinstance(msg, BatchOutMsg):
                for out in msg.outputs:
                    state = self._states.get(out.rid)
                    if state is None:
                        continue
                    if out.finished:
                        del self._states[out.rid]
                    for cb in self.on_output:
                        cb(state, out)
                    state.queue.put_nowait(out)
            elif isinstance(msg, (FlushCacheOutMsg, InfoOutMsg)):
                fut = self._pending.pop(type(msg).__name__, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            elif isinstance(msg, EngineErrorMsg):
                logger.error("engine error: %s", msg.message)

    async def _request(self, msg: Any, reply_type: type, timeout: float = 60.0) -> Any:
        self._check_alive()
        key = reply_type.__name__
        fut = self._pending.get(key)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._pending[key] = fut
            try:
                await self._send_msg(msg)
            except BaseException:
                self._pending.pop(key, None)
                raise
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    def _check_alive(self) -> None:
        if not self.is_alive:
            raise EngineDeadError("engine is not running")

    # ---- public API -----------------------------------------------------------------------
    async def flush_cache(self) -> FlushCacheOutMsg:
        return await self._request(FlushCacheReqMsg(), FlushCacheOutMsg)

    async def get_server_info(self) -> dict[str, Any]:
        return (await self._request(GetInfoReqMsg(), InfoOutMsg)).info

    async def abort(self, rid: str) -> None:
        if self.is_alive:
            with contextlib.suppress(EngineDeadError, zmq.ZMQError):
                await self._send_msg(AbortReqMsg(rid=rid))

    @property
    def num_inflight(self) -> int:
        return len(self._states)

    @property
    def inflight_rids(self) -> list[str]:
        return list(self._states)

    async def generate(
        self,
        input_ids: list[int],
        sampling: SamplingParams,
        rid: str | None = None,
        return_logprob: bool = False,
        logprob_start_len: int = -1,
        top_logprobs_num: int = 0,
        return_text_in_logprobs: bool = False,
        stream: bool = False,
        progress: Callable[[int], None] | None = None,
        priority: int = 0,
    ) -> AsyncIterator[dict[str, Any]]:
        """Runs one sequence; yields native `/generate` dicts with cumulative `text`/`output_ids`.

        With stream=False only the final dict is yielded. The final dict has `finish_reason` set.
        Closing the iterator early (a client disconnect) aborts the request in the engine.
        `progress(n)` is called with the number of tokens generated so far, also after an abort.
        """
        self._check_alive()
        if not isinstance(input_ids, (list, tuple)) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in input_ids):
            raise ValueError("input_ids must be a list of integer token ids")
        rid = rid or uuid.uuid4().hex
        if rid in self._states:
            raise ValueError(f"request id {rid!r} is already in flight")
        detok = None
        if self.tokenizer is not None:
            detok = IncrementalDetokenizer(self.tokenizer, sampling.skip_special_tokens)
        state = ReqState(rid=rid, input_ids=list(input_ids), sampling=sampling,
                          return_logprob=return_logprob, return_text_in_logprobs=return_text_in_logprobs,
                          stream=stream, detok=detok)
        msg = GenerateReqMsg(
            rid=rid, input_ids=list(input_ids), sampling=sampling.to_dict(), return_logprob=return_logprob,
            logprob_start_len=logprob_start_len, top_logprobs_num=top_logprobs_num, stream=stream,
            priority=priority)
        data = encode(msg)  # a value msgpack cannot carry fails here, before any bookkeeping exists
        finished = sent = False
        # Registered before the send (the first output may arrive before send() returns) and removed on
        # every way out of this generator: a rid must never stay "in flight" after its caller is gone.
        self._states[rid] = state
        try:
            sent = True  # from here the engine may hold the request: leaving early must abort it
            await self._send_msg(data)
            while True:
                item = await state.queue.get()
                if isinstance(item, Exception):
                    raise item
                result = absorb(state, item, self.tokenizer)
                if progress is not None:
                    progress(len(state.output_ids))
                if item.finished:
                    finished = True
                    yield result
                    return
                if stream:
                    yield result
        finally:
            if not finished:
                if sent:
                    await self._abort_and_count(state, progress)
                elif self._states.get(rid) is state:
                    del self._states[rid]
                    self._notify_end(state, "the request ended before the engine finished it")

    async def _abort_and_count(self, state: ReqState, progress: Callable[[int], None] | None) -> None:
        """Aborts an abandoned request; with `progress`, waits briefly for the engine's last output so the
        caller learns how many tokens were really produced (usage and rate limits settle to that)."""
        done = False
        try:
            await self.abort(state.rid)
            if progress is None or not self.is_alive:
                return
            deadline = time.monotonic() + ABORT_REPLY_TIMEOUT_S
            while True:
                item = await asyncio.wait_for(state.queue.get(), max(deadline - time.monotonic(), 0.001))
                if isinstance(item, Exception):
                    return
                state.output_ids.extend(item.new_token_ids)
                progress(len(state.output_ids))
                if item.finished:
                    done = True
                    return
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        finally:
            if self._states.get(state.rid) is state:
                del self._states[state.rid]
                if not done:  # the engine's own final output was not seen: release listeners' state
                    self._notify_end(state, "the request ended before the engine finished it")

    def _notify_end(self, state: ReqState, message: str) -> None:
        """Tells `on_output` listeners (metrics) that a request left early, so their per-request state is
        released: the engine's own abort output arrives after the rid is gone and is dropped."""
        out = ReqOutput(rid=state.rid, new_token_ids=[], finished=True,
                        finish_reason={"type": "abort", "message": message}, prompt_tokens=len(state.input_ids),
                        completion_tokens=len(state.output_ids))
        for cb in self.on_output:
            try:
                cb(state, out)
            except Exception:  # a listener's bug must not break the request's cleanup
                logger.exception("on_output listener failed")
