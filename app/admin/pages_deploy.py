"""Pages: deployment (model list, settings form, apply with live progress polled by htmx)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from app.admin.api_deploy import apply_fields, deployment_state, reset_to_flags, validate_form
from app.admin.contracts import DEPLOYMENT_FIELDS
from app.admin.deps import AdminError, Operator, get_runtime, page_operator
from app.admin.render import render
from app.admin.runtime import AdminRuntime

router = APIRouter()

FIELD_LABELS = {
    "model_path": "Model",
    "tp_size": "Tensor parallel size",
    "context_length": "Context length",
    "mem_fraction_static": "Memory fraction",
    "max_running_requests": "Max running requests",
    "chunked_prefill_size": "Chunked prefill size",
    "schedule_policy": "Schedule policy",
    "disable_radix_cache": "Radix cache",
}


BUSY_STATES = ("starting", "restarting", "draining")


def _status(rt: AdminRuntime, request: Request, op: Operator, sup: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    # oob: the answer also replaces the "Running now" badge, so it follows the engine through a restart.
    return render(rt, request, "partials/deploy_status.html", op=op, applying=rt.deploy.is_applying,
                  sup=sup or rt.ctx.supervisor.status(), last=rt.deploy.last_result,
                  pending=rt.deploy.pending_profile_id, oob=True, headers=headers)


@router.get("/deployment")
def deployment_page(request: Request, op: Operator = Depends(page_operator),
                    rt: AdminRuntime = Depends(get_runtime)) -> Response:
    return render(rt, request, "pages/deployment.html", op=op, title="Deployment", active="deployment",
                  d=deployment_state(rt), labels=FIELD_LABELS, fields=DEPLOYMENT_FIELDS)


@router.get("/deployment/current")
def deployment_current(request: Request, op: Operator = Depends(page_operator),
                       rt: AdminRuntime = Depends(get_runtime)) -> Response:
    return render(rt, request, "partials/deploy_current.html", op=op, d=deployment_state(rt), labels=FIELD_LABELS,
                  fields=DEPLOYMENT_FIELDS)


@router.get("/deployment/status")
def deployment_status(request: Request, polling: int = 0, op: Operator = Depends(page_operator),
                      rt: AdminRuntime = Depends(get_runtime)) -> Response:
    # The poll that first sees the restart finished tells the page to refresh its "current" card (a poll
    # only runs while something is busy, so "not busy now" is that first time).
    sup = rt.ctx.supervisor.status()
    done = polling and not rt.deploy.is_applying and sup.get("state") not in BUSY_STATES
    return _status(rt, request, op, sup, headers={"HX-Trigger": "deployment-done"} if done else None)


def _form_fields(form: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {k: form.get(k) for k in DEPLOYMENT_FIELDS if k in form and k != "disable_radix_cache"}
    # The page shows "radix cache on" (a checkbox is absent from the form when unticked).
    fields["disable_radix_cache"] = form.get("radix_cache") is None
    return fields


@router.post("/deployment")
async def deployment_apply(request: Request, op: Operator = Depends(page_operator),
                           rt: AdminRuntime = Depends(get_runtime)) -> Response:
    form = await request.form()
    try:
        fields = await asyncio.to_thread(validate_form, rt, _form_fields(form))
    except AdminError as exc:
        return render(rt, request, "partials/deploy_errors.html", op=op, message=exc.message,
                      errors=exc.fields or {}, labels=FIELD_LABELS)
    await apply_fields(rt, op, fields)
    return _status(rt, request, op)


@router.post("/deployment/reset")
async def deployment_reset(request: Request, op: Operator = Depends(page_operator),
                           rt: AdminRuntime = Depends(get_runtime)) -> Response:
    profile_id = await reset_to_flags(rt, op)
    if profile_id is None:
        return render(rt, request, "partials/flash.html", op=op, kind="ok",
                      message="Saved deployment forgotten: flags and environment apply from the next start "
                              "(they already match what runs).", headers={"HX-Trigger": "deployment-done"})
    return _status(rt, request, op)
