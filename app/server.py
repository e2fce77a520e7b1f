"""The API process: `create_app` (the FastAPI app factory) and `run_server` (uvicorn + signals).

The HTTP port opens at once and answers 503 until the engine is ready; one log line with the URL says
when it is. SIGTERM/SIGINT (Ctrl-C): stop taking requests (503), let in-flight ones finish for up to
`--drain-timeout` seconds, end the rest with an error answer, stop the engine, exit 0. A second
signal ends the open requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from app.chat_template import load_chat_template
from app.context import AppContext
from app.errors import install_error_handlers
from app.gate import RequestGate, StaticKeyGate
from app.landing import router as landing_router
from app.metrics import Metrics
from app.native_routes import router as native_router
from app.openai_routes import router as openai_router
from app.request_limits import RequestLimitsMiddleware
from app.request_log import RequestLogMiddleware
from app.supervisor import ClientFactory, Supervisor
from engine.args import ServerArgs

logger = logging.getLogger("tessera")
CUT_OFF_GRACE_S = 5.0  # after the drain timeout: time for cut-off requests to write their error and settle


@dataclass
class AdminParts:
    """The console when enabled: its context (closed at exit) and, with --admin-port, its own app."""

    ctx: Any
    app: FastAPI | None


def create_app(args: ServerArgs, *, client_factory: ClientFactory | None = None, gate: RequestGate | None = None,
               start_engine: bool = True, flag_args: dict[str, Any] | None = None) -> FastAPI:
    """Builds the app; the engine starts in the lifespan (in the background, so the port opens at once).

    `client_factory` swaps the engine client (tests); `gate` replaces the default static-key gate.
    """
    supervisor = Supervisor(args, client_factory)
    metrics = Metrics(lambda: supervisor.model_name, lambda: supervisor.last_info)
    supervisor.client_hooks.append(metrics.attach)
    supervisor.on_restart.append(metrics.record_restart)
    ctx = AppContext(supervisor, metrics, gate or StaticKeyGate(lambda: supervisor.args.api_key),
                     chat_template=load_chat_template(args.chat_template))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        boot = asyncio.create_task(_boot(app)) if start_engine else None
        try:
            yield
        finally:
            if boot is not None and not boot.done():
                boot.cancel()
                await asyncio.gather(boot, return_exceptions=True)
            await supervisor.shutdown(drain_timeout=0.0)

    app = FastAPI(title="Tessera", version="0.1.0", lifespan=lifespan)
    app.state.ctx = ctx
    app.state.fatal = None
    app.state.on_fatal = None
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(native_router)
    app.include_router(landing_router)
    # Added first, so it runs inside the access log (which then records its 413s and 400s).
    app.add_middleware(RequestLimitsMiddleware, max_bytes=lambda: supervisor.args.max_request_bytes,
                       on_reject=metrics.record_rejected)
    app.add_middleware(RequestLogMiddleware, record=metrics.record_http,
                       log_bodies=lambda: supervisor.args.log_requests)
    app.state.admin = _wire_admin(app, ctx, args, gate is None, flag_args)
    return app


def _wire_admin(app: FastAPI, ctx: AppContext, args: ServerArgs, use_key_gate: bool,
                flag_args: dict[str, Any] | None) -> AdminParts | None:
    if args.disable_admin:
        return None
    from app.admin import AdminContext, create_admin_app, mount_admin

    admin_ctx = AdminContext(data_dir=args.data_dir, database_url=os.environ.get("DATABASE_URL"),
                             models_dir=args.models_dir, supervisor=ctx.supervisor, metrics=ctx.metrics,
                             static_api_key=args.api_key, flag_args=flag_args)
    if use_key_gate:
        ctx.gate = admin_ctx.gate  # API keys and rate limits from the console's DB
    if args.admin_port:
        return AdminParts(admin_ctx, create_admin_app(admin_ctx))
    mount_admin(app, admin_ctx)
    return AdminParts(admin_ctx, None)


async def _boot(app: FastAPI) -> None:
    ctx: AppContext = app.state.ctx
    try:
        await ctx.supervisor.start()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        app.state.fatal = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logger.error("engine failed to start: %s", app.state.fatal)
        if app.state.on_fatal is not None:
            app.state.on_fatal()


class _Server(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT drains instead of closing the port at once."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, peers: list[uvicorn.Server]) -> None:
        super().__init__(config)
        self._app = app
        self._peers = peers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task | None = None
        self._signals = 0

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after shutdown (exit code -15).
        # SIGINT (Ctrl-C) and SIGTERM both drain. A second signal cuts the open requests off (each still
        # gets an error answer) and exits; only a third forces uvicorn out without its shutdown steps.
        self._signals += 1
        if self._loop is None or self._signals >= 3:
            self.force_exit = True
            self.exit_now()
            return
        self._loop.call_soon_threadsafe(self._start_drain if self._signals == 1 else self._cut_off_now)

    def _cut_off_now(self) -> None:
        sup = self._app.state.ctx.supervisor
        sup.begin_drain()
        num = sup.cut_off("The server is shutting down now (a second stop signal).")
        logger.warning("second stop signal: %d request(s) ended with an error; exiting", num)
        self.exit_now()

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        sup = self._app.state.ctx.supervisor
        sup.begin_drain()
        timeout = sup.args.drain_timeout
        logger.info("shutting down: draining %d request(s) for up to %.0fs", sup.inflight, timeout)
        if not await sup.wait_idle(timeout):
            # Every open request gets a proper answer (an error event + [DONE], or a 503 body) and settles
            # its usage before the port closes, instead of being cancelled mid-write.
            num = sup.cut_off(f"The server is shutting down: its drain timeout ({timeout:g}s) expired before "
                              "this request finished.")
            logger.warning("drain timeout: %d request(s) still running were ended with an error", num)
            if not await sup.wait_idle(CUT_OFF_GRACE_S):
                logger.warning("%d request(s) did not end within %.0fs of the cut-off", sup.inflight,
                               CUT_OFF_GRACE_S)
        self.exit_now()

    def exit_now(self) -> None:
        self.should_exit = True
        for peer in self._peers:
            peer.should_exit = True


class _PeerServer(uvicorn.Server):
    """A second server (the admin port); the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # uvicorn's own "running on" line would come before the engine is ready; ours says when it is.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def run_server(args: ServerArgs, flag_args: dict[str, Any] | None = None) -> int:
    """Serves until a signal; returns the process exit code (0 after a clean drain)."""
    configure_logging(args.log_level)
    app = create_app(args, flag_args=flag_args)
    config = uvicorn.Config(app, host=args.host, port=args.port, access_log=False, log_config=None,
                            timeout_graceful_shutdown=5, lifespan="on")
    peers: list[uvicorn.Server] = []
    admin: AdminParts | None = app.state.admin
    if admin is not None and admin.app is not None:
        peers.append(_PeerServer(uvicorn.Config(admin.app, host=args.host, port=args.admin_port, access_log=False,
                                                log_config=None, lifespan="on")))
    server = _Server(config, app, peers)
    app.state.on_fatal = server.exit_now
    sup: Supervisor = app.state.ctx.supervisor
    announced = False

    def announce() -> None:
        nonlocal announced
        if not announced:
            announced = True
            url = f"http://{args.host}:{args.port}"
            extra = f", console at http://{args.host}:{args.admin_port}/admin/" if peers else (
                f", console at {url}/admin/" if admin is not None else "")
            logger.info("Tessera ready at %s (model '%s'%s)", url, sup.model_name, extra)

    sup.on_ready.append(announce)

    async def main() -> None:
        await asyncio.gather(server.serve(), *(p.serve() for p in peers))

    try:
        asyncio.run(main())
    finally:
        if admin is not None and admin.app is not None:
            admin.ctx.close()
    if not server.started:
        return 1
    return 1 if app.state.fatal else 0
