"""Template rendering with the console's security headers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from app.admin.deps import Operator
from app.admin.runtime import AdminRuntime

# Scripts only from our own static files (htmx, Chart.js, console JS): an injected <script> cannot run.
# Inline styles stay allowed because htmx and Chart.js set them.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(rt: AdminRuntime, request: Request, template: str, *, op: Operator | None = None, status: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    ctx = {"title": context.pop("title", "Tessera"), "active": context.pop("active", None),
           "username": op.session.username if op else None, "csrf_token": op.session.csrf_token if op else None,
           **context}
    resp = rt.templates.TemplateResponse(request, template, ctx, status_code=status)
    resp.headers.update(SECURITY_HEADERS)
    if headers:
        resp.headers.update(headers)
    return resp
