"""The dashboard's replicas panel (`--dp-size`): one column per replica, refreshed every few seconds, and
its JSON twin `/admin/api/replicas`. Empty with a single engine group."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.admin.deps import Operator, api_operator, get_runtime, page_operator
from app.admin.render import render
from app.admin.runtime import AdminRuntime

router = APIRouter()


def replica_rows(rt: AdminRuntime) -> list[dict[str, Any]]:
    return list(rt.ctx.supervisor.status().get("replicas") or [])


@router.get("/api/replicas")
def api_replicas(op: Operator = Depends(api_operator), rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return {"replicas": replica_rows(rt)}


@router.get("/partials/replicas")
def replicas_partial(request: Request, op: Operator = Depends(page_operator),
                     rt: AdminRuntime = Depends(get_runtime)) -> Response:
    return render(rt, request, "partials/replicas.html", op=op, replicas=replica_rows(rt))
