"""Supervisor: owns the engine (an EngineClient and its rank processes) for the API process.

States: starting → ready ⇄ restarting (new settings, or the engine died) → draining (SIGTERM).
Requests take a `lease()`; outside `ready` a lease is refused with a 503, so clients never hang.
A dead engine ends its in-flight requests with `EngineDeadError` (the routes answer 503) and is
restarted automatically with backoff. `apply()` restarts with new ServerArgs and rolls back on
failure. Satisfies `app.admin.contracts.SupervisorProtocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.errors import unavailable
from app.inflight import InflightRequests
from engine.args import ServerArgs

logger = logging.getLogger(__name__)

ClientFactory = Callable[[ServerArgs], Any]
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
INFO_POLL_S = 1.0


def _default_factory(args: ServerArgs) -> Any:
    from engine.client import EngineClient

    return EngineClient(args)


class Supervisor:
    def __init__(self, args: ServerArgs, client_factory: ClientFactory | None = None,
                 start_timeout: float = 600.0) -> None:
        self.args = args
        self.client: Any = None
        self.state = "starting"
        self.error: str | None = None
        self.progress: list[str] = []
        self._inflight = InflightRequests()
        self.last_info: dict[str, Any] = {}
        self.last_info_at = 0.0
        self.restarts = 0
        # Called with each new client before it serves (metrics hook into on_output here).
        self.client_hooks: list[Callable[[Any], None]] = []
        self.on_ready: list[Callable[[], None]] = []
        self.on_restart: list[Callable[[], None]] = []  # each restart attempt after an engine death
        self._starting: Any = None  # a client whose start() is running (stopped by shutdown)
        self._factory = client_factory or _default_factory
        self._start_timeout = start_timeout
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self._shutting_down = False

    # ---- SupervisorProtocol -----------------------------------------------------------------
    def current_args(self) -> dict[str, Any]:
        return self.args.to_dict()

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "progress": list(self.progress), "error": self.error,
                "model_name": self.model_name}

    def engine_info(self) -> dict[str, Any]:
        """What the running engine resolved at start (`max_context_length`, `max_running_requests`, ...)."""
        return dict(getattr(self.client, "model_info", None) or {})

    def gpu_count(self) -> int:
        try:
            import pynvml

            pynvml.nvmlInit()
            try:
                return int(pynvml.nvmlDeviceGetCount())
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # no driver / no library: a CPU box
            return 0

    async def apply(self, new_args: dict[str, Any]) -> None:
        """Drains, stops and restarts with `new_args` (merged over the current ones).

        Invalid settings raise `ArgsError` before anything stops. A failed start restores the previous
        settings and re-raises the start error.
        """
        merged = {**self.args.to_dict(), **new_args}
        candidate = ServerArgs.from_dict(merged)
        async with self._lock:
            previous = self.args
            self.progress = []
            self._note("applying new settings")
            self.state = "restarting"
            await self._drain(self.args.drain_timeout)
            await self._stop_client("stopping engine")
            try:
                await self._start_client(candidate, "restarting")
            except Exception as exc:
                self._note(f"start failed: {exc}; restoring previous settings")
                try:
                    await self._start_client(previous, "restarting")
                except Exception as exc2:
                    self.state, self.error = "failed", f"restore failed too: {exc2}"
                    self._note(self.error)
                    raise RuntimeError(f"{exc} (and restoring the previous settings failed: {exc2})") from exc
                raise

    # ---- lifecycle --------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.args.resolved_served_model_name

    @property
    def inflight(self) -> int:
        """HTTP requests holding the engine now."""
        return self._inflight.count

    @property
    def is_ready(self) -> bool:
        return self.state == "ready"

    async def start(self) -> None:
        """First start; raises the start error (the server then exits non-zero)."""
        async with self._lock:
            self.progress = []
            await self._start_client(self.args, "starting")

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stops taking requests, drains up to `drain_timeout` (default: the args'), stops the engine."""
        self._shutting_down = True
        self.state = "draining"
        drained = await self._drain(self.args.drain_timeout if drain_timeout is None else drain_timeout)
        if not drained:
            logger.warning("drain timeout: %d request(s) still running are cut off", self.inflight)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Wait for them: a restart cancelled mid-start stops its new ranks on the way out, and must have
        # done so before this process exits (SIGTERM during a restart must not orphan an engine).
        await asyncio.gather(*tasks, return_exceptions=True)
        starting, self._starting = self._starting, None
        if starting is not None:
            with contextlib.suppress(Exception):
                await starting.stop(grace_s=0.0)
        await self._stop_client("stopping engine")
        self.state = "draining"

    def begin_drain(self) -> None:
        """Refuse new requests from now on (SIGTERM); in-flight ones keep running."""
        self._shutting_down = True
        self.state = "draining"

    async def wait_idle(self, timeout: float) -> bool:
        return await self._drain(timeout)

    def cut_off(self, reason: str) -> int:
        """Ends every request still running in the engine with a clean error (drain timeout)."""
        client = self.client
        return client.cut_off(reason) if client is not None and hasattr(client, "cut_off") else 0

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Any]:
        """Holds the engine for one HTTP request; 503 unless ready."""
        if self.state != "ready" or self.client is None or not self.client.is_alive:
            raise unavailable(self._unavailable_message())
        with self._inflight.hold():
            yield self.client

    def _unavailable_message(self) -> str:
        return {
            "starting": "The engine is starting; retry shortly.",
            "restarting": "The engine is restarting; retry shortly.",
            "draining": "The server is shutting down.",
            "failed": f"The engine is not running: {self.error or 'start failed'}",
        }.get(self.state, "The engine is not available.")

    async def _drain(self, timeout: float) -> bool:
        return await self._inflight.wait_idle(timeout)

    def _note(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        self.progress.append(stamped)
        logger.info("supervisor: %s", line)

    async def _start_client(self, args: ServerArgs, state: str) -> None:
        self.state = state
        self._note(f"starting engine: model {args.model_path}, tp {args.tp_size}, device {args.device}")
        client = self._factory(args)
        for hook in self.client_hooks:
            hook(client)
        t0 = time.monotonic()
        self._starting = client
        try:
            await client.start(timeout=self._start_timeout)
        except Exception as exc:
            self.state, self.error = "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._note(f"engine failed to start: {self.error}")
            raise
        finally:
            if self._starting is client:
                self._starting = None
        self.args, self.client, self.error = args, client, None
        client.on_death.append(self._on_death)
        self._note(f"engine ready in {time.monotonic() - t0:.1f}s")
        self.state = "draining" if self._shutting_down else "ready"
        self._ensure_poller()
        for cb in self.on_ready:
            cb()

    async def _stop_client(self, note: str) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        self._note(note)
        with contextlib.suppress(Exception):
            client.on_death.clear()
            await client.stop()
        self.last_info = {}

    # ---- crash recovery ---------------------------------------------------------------------
    def _on_death(self, reason: str) -> None:
        if self._shutting_down:
            return
        logger.error("engine died (%s); restarting", reason)
        self.state, self.error = "restarting", reason
        task = asyncio.get_running_loop().create_task(self._recover(reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, reason: str) -> None:
        # The lock is taken per attempt so an operator's apply() can still get in between retries.
        attempt = 0
        while not self._shutting_down:
            async with self._lock:
                if self.client is not None and self.client.is_alive:
                    return  # apply() already brought an engine up
                if attempt == 0:
                    self.progress = []
                    self._note(f"engine died: {reason}")
                    await self._stop_client("cleaning up dead engine")
                self.restarts += 1
                for cb in self.on_restart:
                    cb()
                try:
                    await self._start_client(self.args, "restarting")
                    return
                except Exception as exc:  # keep trying: a transient failure must not need an operator
                    delay = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
                    self._note(f"restart attempt {attempt + 1} failed ({exc}); retrying in {delay:.1f}s")
            await asyncio.sleep(delay)
            attempt += 1

    # ---- engine stats -----------------------------------------------------------------------
    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_info())
            self._tasks.add(self._poller)
            self._poller.add_done_callback(self._tasks.discard)

    async def _poll_info(self) -> None:
        """Keeps a recent copy of the engine stats so /metrics and the console never wait on it."""
        while not self._shutting_down:
            client = self.client
            if client is not None and client.is_alive:
                try:
                    self.last_info = await asyncio.wait_for(client.get_server_info(), 5.0)
                    self.last_info_at = time.monotonic()
                except Exception as exc:  # the watchdog handles death; stats may be briefly stale
                    logger.debug("server info poll failed: %s", exc)
            await asyncio.sleep(INFO_POLL_S)
