"""Pages: login (plain form, works before any session exists), password change, logout."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.admin.api_auth import do_change_password, do_login, do_logout
from app.admin.deps import AdminError, Operator, get_runtime, page_operator_pending, set_session_cookie
from app.admin.render import render
from app.admin.runtime import PREFIX, AdminRuntime
from app.admin.security import random_token, tokens_equal
from app.admin.sessions import SESSION_COOKIE

router = APIRouter()

# Before login there is no session to hold a CSRF token, so the login form uses a double-submit cookie:
# a cross-site page can post the form but cannot read or set this cookie.
LOGIN_CSRF_COOKIE = "tessera_login_csrf"


def _login_page(rt: AdminRuntime, request: Request, *, error: str | None = None, info: str | None = None,
                status: int = 200, username: str | None = None) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or random_token()
    resp = render(rt, request, "pages/login.html", title="Log in", error=error, info=info, login_csrf=token,
                  username_value=username, status=status)
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path=PREFIX,
                    secure=request.url.scheme == "https")
    return resp


@router.get("/login")
def login_page(request: Request, rt: AdminRuntime = Depends(get_runtime)) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token and rt.sessions.load(token):
        return RedirectResponse(f"{PREFIX}/", status_code=303)
    return _login_page(rt, request)


@router.post("/login")
def login_submit(request: Request, username: str = Form(""), password: str = Form(""), login_csrf: str = Form(""),
                 rt: AdminRuntime = Depends(get_runtime)) -> Response:
    if not tokens_equal(login_csrf, request.cookies.get(LOGIN_CSRF_COOKIE)):
        return _login_page(rt, request, error="The login form expired; please try again.", status=403,
                           username=username)
    try:
        token, _csrf, must_change = do_login(rt, request, username, password)
    except AdminError as exc:
        resp = _login_page(rt, request, error=exc.message, status=exc.status, username=username)
        if exc.headers:
            resp.headers.update(exc.headers)
        return resp
    resp = RedirectResponse(f"{PREFIX}/password" if must_change else f"{PREFIX}/", status_code=303)
    set_session_cookie(request, resp, token)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    return resp


@router.post("/logout")
def logout(request: Request, op: Operator = Depends(page_operator_pending),
           rt: AdminRuntime = Depends(get_runtime)) -> Response:
    do_logout(rt, request, op)
    resp = Response(status_code=200, headers={"HX-Redirect": f"{PREFIX}/login"})
    resp.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return resp


@router.get("/password")
def password_page(request: Request, op: Operator = Depends(page_operator_pending),
                  rt: AdminRuntime = Depends(get_runtime)) -> Response:
    return render(rt, request, "pages/password.html", op=op, title="Change password",
                  must_change=op.session.must_change_password)


@router.post("/password")
def password_submit(request: Request, old_password: str = Form(""), new_password: str = Form(""),
                    confirm_password: str = Form(""), op: Operator = Depends(page_operator_pending),
                    rt: AdminRuntime = Depends(get_runtime)) -> Response:
    if new_password != confirm_password:
        raise AdminError(400, "The two new passwords differ.", "invalid_password")
    do_change_password(rt, op, old_password, new_password)
    return Response(status_code=200, headers={"HX-Redirect": f"{PREFIX}/"})
