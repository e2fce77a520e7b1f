"""Request plumbing shared by the JSON API and the pages: errors, session + CSRF checks, client identity.

Every authenticated route depends on `api_operator` / `page_operator`; both verify the `X-CSRF-Token`
header on any non-GET request, so no mutating route can forget it.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app.admin.audit import Actor
from app.admin.runtime import PREFIX, AdminRuntime
from app.admin.security import tokens_equal
from app.admin.sessions import SESSION_COOKIE, SessionInfo

RUNTIME_STATE_ATTR = "tessera_admin_runtime"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


class AdminError(Exception):
    """An admin API failure, answered as `{"error": {"message", "type", "code"}}` (or a flash on pages)."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None,
                 fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.fields = status, message, code, headers, fields


class LoginRedirect(Exception):
    def __init__(self, to: str) -> None:
        self.to = to


def get_runtime(request: Request) -> AdminRuntime:
    return getattr(request.app.state, RUNTIME_STATE_ATTR)


def client_ip(request: Request) -> str | None:
    # uvicorn rewrites request.client from X-Forwarded-For only for trusted proxies (--forwarded-allow-ips).
    return request.client.host if request.client else None


@dataclass(frozen=True)
class Operator:
    session: SessionInfo
    actor: Actor


def _operator(request: Request, rt: AdminRuntime, *, page: bool, allow_pending_password: bool) -> Operator:
    token = request.cookies.get(SESSION_COOKIE)
    info = rt.sessions.load(token) if token else None
    if info is None:
        if page:
            raise LoginRedirect(f"{PREFIX}/login")
        raise AdminError(401, "Not logged in: POST /admin/api/login first.", "not_authenticated")
    if request.method not in SAFE_METHODS and not tokens_equal(request.headers.get(CSRF_HEADER), info.csrf_token):
        raise AdminError(403, f"Missing or wrong CSRF token: send the {CSRF_HEADER} header from the login answer.",
                         "csrf_failed")
    if info.must_change_password and not allow_pending_password:
        if page:
            raise LoginRedirect(f"{PREFIX}/password")
        raise AdminError(403, "Change the initial password first: POST /admin/api/password.",
                         "password_change_required")
    return Operator(info, Actor(info.username, client_ip(request), request.headers.get("user-agent")))


def api_operator(request: Request, rt: AdminRuntime = Depends(get_runtime)) -> Operator:
    return _operator(request, rt, page=False, allow_pending_password=False)


def api_operator_pending(request: Request, rt: AdminRuntime = Depends(get_runtime)) -> Operator:
    """Also lets in a session whose password must still be changed (password change, logout, session)."""
    return _operator(request, rt, page=False, allow_pending_password=True)


def page_operator(request: Request, rt: AdminRuntime = Depends(get_runtime)) -> Operator:
    return _operator(request, rt, page=True, allow_pending_password=False)


def page_operator_pending(request: Request, rt: AdminRuntime = Depends(get_runtime)) -> Operator:
    return _operator(request, rt, page=True, allow_pending_password=True)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=request.url.scheme == "https",
                        path=PREFIX)


def error_body(exc: AdminError) -> dict[str, Any]:
    err: dict[str, Any] = {"message": exc.message, "type": "admin_error", "code": exc.code}
    if exc.fields:
        err["fields"] = exc.fields
    return {"error": err}


async def admin_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AdminError)
    if is_htmx(request):
        # htmx does not swap 4xx answers by default; show the message in the page's flash area instead.
        html = f'<div class="flash error" role="alert">{escape(exc.message)}</div>'
        if exc.code == "not_authenticated":
            return HTMLResponse(html, headers={"HX-Redirect": f"{PREFIX}/login"})
        return HTMLResponse(html, headers={"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    return JSONResponse(error_body(exc), status_code=exc.status, headers=exc.headers)


async def login_redirect_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRedirect)
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": exc.to})
    return RedirectResponse(exc.to, status_code=303)
