"""Access log and per-route HTTP counters as a pure ASGI middleware (BaseHTTPMiddleware would break
streaming disconnect detection). Prompt text is logged only with `--log-requests`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("tessera.access")
MAX_LOGGED_BODY = 16 * 1024
# Label values for the request counter; anything else is "other" so random paths cannot blow up the series.
KNOWN_ROUTES = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/tokenize", "/v1/detokenize", "/generate",
    "/get_model_info", "/model_info", "/get_server_info", "/server_info", "/flush_cache", "/abort_request",
    "/health", "/health_generate", "/ready", "/live", "/metrics",
})


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, record: Callable[[str, int], None], log_bodies: Callable[[], bool]) -> None:
        self.app = app
        self.record = record
        self.log_bodies = log_bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        body = bytearray()
        # Console bodies carry passwords and key material: never logged, whatever --log-requests says.
        capture = self.log_bodies() and not scope.get("path", "").startswith("/admin")

        async def receive_logged() -> Message:
            message = await receive()
            if capture and message["type"] == "http.request" and len(body) < MAX_LOGGED_BODY:
                body.extend(message.get("body", b"")[: MAX_LOGGED_BODY - len(body)])
            return message

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive_logged if capture else receive, send_logged)
        finally:
            path = scope.get("path", "")
            if path.startswith("/admin"):
                route = "/admin"
            else:
                route = path if path in KNOWN_ROUTES else "other"
            self.record(route, status)
            client = scope.get("client") or ("-", 0)
            elapsed = time.perf_counter() - start
            outcome = scope.get("tessera.outcome")  # set by app.request_scope when a request fails
            shown = f"{status} (ended {outcome})" if outcome and not outcome.startswith(str(status)) else str(status)
            if capture and body:
                logger.info("%s %s %s %s %.3fs body=%s", client[0], scope.get("method"), path, shown, elapsed,
                            body.decode("utf-8", "replace"))
            elif route not in ("/metrics", "/health", "/ready", "/live"):
                # The console polls its JSON twins every few seconds: successful reads go to DEBUG so the
                # access log shows traffic and changes, not the dashboard's heartbeat.
                polling = (scope.get("method") == "GET" and status < 400 and path.startswith("/admin/")
                           and (path.startswith("/admin/api/") or path.endswith("/status")))
                logger.log(logging.DEBUG if polling else logging.INFO, "%s %s %s %s %.3fs", client[0],
                           scope.get("method"), path, shown, elapsed)
