"""`GET /`: a small landing page, so someone who opens the server's address in a browser finds their way."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", include_in_schema=False)
async def landing(request: Request) -> HTMLResponse:
    ctx = request.app.state.ctx
    admin = getattr(request.app.state, "admin", None)
    # With --admin-port the console is served on its own port; without an admin it is not there at all.
    if admin is None:
        console = "<li>Admin console: off (<code>--disable-admin</code>)</li>"
    elif getattr(admin, "app", None) is not None:
        console = f"<li>Admin console: on port {int(ctx.args.admin_port)} at <code>/admin</code></li>"
    else:
        console = '<li><a href="/admin">Admin console</a></li>'
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tessera</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem">
<h1>Tessera</h1>
<p>Serving <strong>{html.escape(ctx.model_name)}</strong> ({html.escape(ctx.supervisor.state)}).
OpenAI-compatible API under <code>/v1</code>, SGLang's native API at <code>/generate</code>.</p>
<ul>
{console}
<li><a href="/docs">API reference</a> (<code>/docs</code>)</li>
<li><a href="/v1/models">/v1/models</a></li>
</ul>
</body></html>
"""
    return HTMLResponse(body)
