"""Pages: API keys (htmx form + table; the secret is rendered once, in the create/rotate answer)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from app.admin.api_keys import create_key, list_keys, revoke_key, rotate_key
from app.admin.deps import Operator, get_runtime, page_operator
from app.admin.keys import DEFAULT_ROTATE_GRACE_S
from app.admin.render import render
from app.admin.runtime import AdminRuntime

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store", "HX-Trigger": "keys-changed"}


@router.get("/keys")
def keys_page(request: Request, op: Operator = Depends(page_operator),
              rt: AdminRuntime = Depends(get_runtime)) -> Response:
    return render(rt, request, "pages/keys.html", op=op, title="API keys", active="keys", keys=list_keys(rt),
                  static_key=bool(rt.ctx.static_api_key), grace_hours=DEFAULT_ROTATE_GRACE_S // 3600)


@router.get("/keys/table")
def keys_table(request: Request, op: Operator = Depends(page_operator),
               rt: AdminRuntime = Depends(get_runtime)) -> Response:
    return render(rt, request, "partials/key_table.html", op=op, keys=list_keys(rt))


@router.post("/keys")
def keys_create(request: Request, name: str = Form(""), rpm: str = Form(""), tpm: str = Form(""),
                max_concurrency: str = Form(""), models: str = Form(""), expires_at: str = Form(""),
                op: Operator = Depends(page_operator), rt: AdminRuntime = Depends(get_runtime)) -> Response:
    expiry = expires_at.strip()
    if expiry and len(expiry) <= 16:  # <input type="datetime-local"> sends minutes, no zone: read it as UTC
        expiry = expiry + ":00+00:00" if len(expiry) == 16 else expiry + "T00:00:00+00:00"
    info = create_key(rt, op, name=name, rpm=rpm, tpm=tpm, max_concurrency=max_concurrency, models=models or None,
                      expires_at=expiry or None)
    return render(rt, request, "partials/key_secret.html", op=op, key=info, action="created", headers=NO_STORE)


@router.post("/keys/{key_id}/revoke")
def keys_revoke(request: Request, key_id: int, op: Operator = Depends(page_operator),
                rt: AdminRuntime = Depends(get_runtime)) -> Response:
    info = revoke_key(rt, op, key_id)
    return render(rt, request, "partials/flash.html", op=op, kind="ok",
                  message=f"Revoked {info['name']} ({info['display']}): requests with it now get 401.",
                  headers=NO_STORE)


@router.post("/keys/{key_id}/rotate")
def keys_rotate(request: Request, key_id: int, op: Operator = Depends(page_operator),
                rt: AdminRuntime = Depends(get_runtime)) -> Response:
    info = rotate_key(rt, op, key_id, DEFAULT_ROTATE_GRACE_S)
    return render(rt, request, "partials/key_secret.html", op=op, key=info, action="rotated", headers=NO_STORE)

