"""JSON API: API keys. The secret appears only in the answers to create and rotate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.admin import audit
from app.admin.deps import AdminError, Operator, api_operator, get_runtime
from app.admin.keys import DEFAULT_ROTATE_GRACE_S, KeyInputError, build_spec
from app.admin.runtime import AdminRuntime

router = APIRouter()


class KeyCreateBody(BaseModel):
    name: str
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    models: list[str] | None = None
    expires_at: str | None = None


class RotateBody(BaseModel):
    grace_seconds: int = DEFAULT_ROTATE_GRACE_S


def create_key(rt: AdminRuntime, op: Operator, **fields: Any) -> dict[str, Any]:
    try:
        spec = build_spec(**fields)
    except KeyInputError as exc:
        raise AdminError(400, str(exc), "invalid_key_request") from exc
    info, secret = rt.keys.create(spec, op.actor.username)
    rt.gate.invalidate()
    audit.record(rt.db, op.actor, "key_create", f"key #{info['id']} {info['name']}",
                 {k: info[k] for k in ("prefix", "last_four", "models", "rpm", "tpm", "max_concurrency", "expires_at")})
    return {**info, "key": secret}


def revoke_key(rt: AdminRuntime, op: Operator, key_id: int) -> dict[str, Any]:
    info = rt.keys.revoke(key_id)
    if info is None:
        raise AdminError(404, f"No API key with id {key_id}.", "not_found")
    rt.gate.invalidate()
    audit.record(rt.db, op.actor, "key_revoke", f"key #{key_id} {info['name']}")
    return info


def rotate_key(rt: AdminRuntime, op: Operator, key_id: int, grace_seconds: int) -> dict[str, Any]:
    try:
        result = rt.keys.rotate(key_id, grace_seconds)
    except KeyInputError as exc:
        raise AdminError(400, str(exc), "invalid_key_request") from exc
    if result is None:
        raise AdminError(404, f"No API key with id {key_id}.", "not_found")
    info, secret = result
    rt.gate.invalidate()
    audit.record(rt.db, op.actor, "key_rotate", f"key #{key_id} {info['name']}",
                 {"grace_seconds": grace_seconds, "prefix": info["prefix"], "last_four": info["last_four"]})
    return {**info, "key": secret}


def list_keys(rt: AdminRuntime) -> list[dict[str, Any]]:
    keys = rt.keys.list()
    for k in keys:
        k["window"] = rt.gate.limiter.usage(k["id"])  # requests / tokens in the last 60 s, in flight now
    return keys


@router.post("/api/keys", status_code=201)
def api_create_key(body: KeyCreateBody, op: Operator = Depends(api_operator),
                   rt: AdminRuntime = Depends(get_runtime)) -> JSONResponse:
    return JSONResponse(create_key(rt, op, **body.model_dump()), status_code=201,
                        headers={"Cache-Control": "no-store"})


@router.get("/api/keys")
def api_list_keys(op: Operator = Depends(api_operator), rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return {"keys": list_keys(rt)}


@router.get("/api/keys/{key_id}")
def api_get_key(key_id: int, op: Operator = Depends(api_operator),
                rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    info = rt.keys.get(key_id)
    if info is None:
        raise AdminError(404, f"No API key with id {key_id}.", "not_found")
    return info


@router.delete("/api/keys/{key_id}")
def api_revoke_key(key_id: int, op: Operator = Depends(api_operator),
                   rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return revoke_key(rt, op, key_id)


@router.post("/api/keys/{key_id}/rotate")
def api_rotate_key(key_id: int, body: RotateBody | None = None, op: Operator = Depends(api_operator),
                   rt: AdminRuntime = Depends(get_runtime)) -> JSONResponse:
    grace = body.grace_seconds if body is not None else DEFAULT_ROTATE_GRACE_S
    return JSONResponse(rotate_key(rt, op, key_id, grace), headers={"Cache-Control": "no-store"})
