"""Tessera admin console: pages under `/admin`, JSON twins under `/admin/api/`, and the KeyGate that
enforces API keys and rate limits on generation routes.

    ctx = AdminContext(data_dir=..., database_url=None, models_dir=..., supervisor=..., metrics=...,
                       static_api_key=args.api_key)
    mount_admin(app, ctx)          # console on the API port, under /admin
    app2 = create_admin_app(ctx)   # or: a separate app for --admin-port
    gate = ctx.gate                # KeyGate for /v1/* and native generation routes
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from app.admin.context import WEB_DIR, AdminContext
from app.admin.contracts import DEPLOYMENT_FIELDS, MetricsSourceProtocol, SupervisorProtocol
from app.admin.deployment import StartupDeployment, resolve_startup_args
from app.admin.deps import (
    RUNTIME_STATE_ATTR,
    AdminError,
    LoginRedirect,
    admin_error_handler,
    login_redirect_handler,
)
from app.admin.gate import Admission, GateError, KeyGate
from app.admin.runtime import PREFIX
from app.errors import validation_message

__all__ = [
    "DEPLOYMENT_FIELDS",
    "Admission",
    "AdminContext",
    "GateError",
    "KeyGate",
    "MetricsSourceProtocol",
    "StartupDeployment",
    "SupervisorProtocol",
    "create_admin_app",
    "mount_admin",
    "resolve_startup_args",
]


def _routers() -> list[Any]:
    from app.admin import (
        api_auth,
        api_deploy,
        api_keys,
        api_observe,
        pages_auth,
        pages_deploy,
        pages_keys,
        pages_main,
        pages_replicas,
    )

    return [api_auth.router, api_keys.router, api_deploy.router, api_observe.router, pages_auth.router,
            pages_keys.router, pages_deploy.router, pages_main.router, pages_replicas.router]


def mount_admin(app: FastAPI, ctx: AdminContext) -> None:
    """Adds the console (`/admin`, `/admin/api/*`, `/admin/static`) to an existing app.

    Builds the runtime now (opens the DB, runs `alembic upgrade head`, creates the admin account on
    first start) so a broken DB fails the server at start, not at the first request. The app's lifespan
    is wrapped to flush pending usage rows and close the DB at shutdown (`ctx.close()`).
    """
    _attach(app, ctx, close_on_shutdown=True)


def _attach(app: FastAPI, ctx: AdminContext, *, close_on_shutdown: bool) -> None:
    if getattr(app.state, RUNTIME_STATE_ATTR, None) is not None:
        raise RuntimeError("the admin console is already mounted on this app")
    runtime = ctx.runtime
    setattr(app.state, RUNTIME_STATE_ATTR, runtime)
    for router in _routers():
        app.include_router(router, prefix=PREFIX, include_in_schema=_in_schema(router))
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(WEB_DIR / "static")), name="admin-static")
    app.add_exception_handler(AdminError, admin_error_handler)
    app.add_exception_handler(LoginRedirect, login_redirect_handler)
    _admin_shaped_validation_errors(app)
    if not close_on_shutdown:
        return
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                ctx.close()

    app.router.lifespan_context = lifespan


def _admin_shaped_validation_errors(app: FastAPI) -> None:
    """A request the console's models refuse (a wrong type: `rpm: "lots"`, a path id that is not a number) is an
    admin error like the console's own checks (`invalid_request`, the field in `fields`; a flash on htmx pages);
    other routes keep the app's handler (the OpenAI error shape on the API port, FastAPI's own on a bare app)."""
    previous = app.exception_handlers.get(RequestValidationError, request_validation_exception_handler)

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if not request.url.path.startswith(PREFIX + "/"):
            return await previous(request, exc)
        message, param = validation_message(list(exc.errors()))
        return await admin_error_handler(request, AdminError(400, message, "invalid_request",
                                                             fields={param: message} if param else None))

    app.add_exception_handler(RequestValidationError, handler)


def _in_schema(router: Any) -> bool:
    # Only the JSON API belongs in the OpenAPI schema; the HTML pages would only clutter it.
    return any(getattr(r, "path", "").startswith("/api/") for r in router.routes)


def create_admin_app(ctx: AdminContext) -> FastAPI:
    """A standalone app serving only the console, for `--admin-port`. `/` redirects to `/admin/`.

    The main app keeps using `ctx.gate`, so this app does not close the context at its shutdown: the
    owner of `ctx` calls `ctx.close()` once both servers have stopped.
    """
    app = FastAPI(title="Tessera admin", docs_url=f"{PREFIX}/api/docs", redoc_url=None,
                  openapi_url=f"{PREFIX}/api/openapi.json")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    _attach(app, ctx, close_on_shutdown=False)
    return app
