"""JSON API: login, logout, session, password change.

Handlers are plain `def`: FastAPI runs them in its thread pool, so argon2 and SQLite never block the
event loop that also serves generation traffic.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.admin import audit
from app.admin.bootstrap import forget_password_file
from app.admin.deps import (
    AdminError,
    Operator,
    api_operator_pending,
    client_ip,
    get_runtime,
    set_session_cookie,
)
from app.admin.runtime import PREFIX, AdminRuntime
from app.admin.sessions import SESSION_COOKIE, authenticate, change_password

router = APIRouter()


class LoginBody(BaseModel):
    username: str
    password: str


class PasswordBody(BaseModel):
    old_password: str
    new_password: str


def do_login(rt: AdminRuntime, request: Request, username: str, password: str) -> tuple[str, str, bool]:
    """Shared by the API and the login page: returns (session token, CSRF token, must_change_password)."""
    ip, ua = client_ip(request), request.headers.get("user-agent")
    username = username.strip()[:64]
    wait = rt.throttle.retry_after(ip, username)
    if wait:
        raise AdminError(429, f"Too many failed logins: try again in {wait} s.", "login_throttled",
                         headers={"Retry-After": str(wait)})
    user = authenticate(rt.db, rt.passwords, username, password)
    if user is None:
        rt.throttle.failure(ip, username)
        # The attempted name goes in the detail, never the password.
        audit.record(rt.db, audit.Actor("-", ip, ua), "login_failed", None, {"username": username})
        raise AdminError(401, "Wrong username or password.", "invalid_credentials")
    rt.throttle.success(ip, username)
    token, csrf = rt.sessions.create(user.id, ip, ua)
    audit.record(rt.db, audit.Actor(user.username, ip, ua), "login")
    return token, csrf, user.must_change_password


def do_change_password(rt: AdminRuntime, op: Operator, old_password: str, new_password: str) -> None:
    error = change_password(rt.db, rt.passwords, op.session.user_id, old_password, new_password)
    if error:
        raise AdminError(400, error.capitalize() + ".", "invalid_password")
    rt.sessions.delete_for_user(op.session.user_id, keep_session_id=op.session.session_id)
    forget_password_file(rt.ctx.data_dir)
    audit.record(rt.db, op.actor, "password_change", op.session.username)


def do_logout(rt: AdminRuntime, request: Request, op: Operator) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        rt.sessions.delete(token)
    audit.record(rt.db, op.actor, "logout")


@router.post("/api/login")
def api_login(body: LoginBody, request: Request, rt: AdminRuntime = Depends(get_runtime)) -> JSONResponse:
    token, csrf, must_change = do_login(rt, request, body.username, body.password)
    resp = JSONResponse({"csrf_token": csrf, "must_change_password": must_change})
    set_session_cookie(request, resp, token)
    return resp


@router.post("/api/logout")
def api_logout(request: Request, op: Operator = Depends(api_operator_pending),
               rt: AdminRuntime = Depends(get_runtime)) -> JSONResponse:
    do_logout(rt, request, op)
    resp = JSONResponse({"ok": True})
    resp.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return resp


@router.get("/api/session")
def api_session(op: Operator = Depends(api_operator_pending)) -> dict[str, Any]:
    return {"username": op.session.username, "csrf_token": op.session.csrf_token,
            "must_change_password": op.session.must_change_password}


@router.post("/api/password")
def api_password(body: PasswordBody, op: Operator = Depends(api_operator_pending),
                 rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    do_change_password(rt, op, body.old_password, body.new_password)
    return {"ok": True, "must_change_password": False}
