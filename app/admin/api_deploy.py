"""JSON API: deployment (models, engine settings, apply with progress, reset to flags)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse

from app.admin import audit
from app.admin.contracts import DEPLOYMENT_FIELDS
from app.admin.deploy_manager import ApplyInProgress
from app.admin.deployment import (
    MEM_FRACTION_RANGE,
    DeploymentInvalid,
    deactivate_profiles,
    effective_source,
    selected_model,
    validate_deployment,
)
from app.admin.deps import AdminError, Operator, api_operator, get_runtime
from app.admin.model_catalog import list_models
from app.admin.runtime import AdminRuntime

router = APIRouter()

PRECEDENCE = (
    "Settings applied from the console are saved and override the matching flags and environment "
    "(--model-path / MODEL_PATH, --tp-size, --context-length, --mem-fraction-static, --max-running-requests, "
    "--chunked-prefill-size, --schedule-policy, --disable-radix-cache) at every start, until you reset to "
    "flags. All other flags (host, port, --api-key, ...) always come from the command line and environment."
)


def _fields(args: dict[str, Any]) -> dict[str, Any]:
    return {k: args.get(k) for k in DEPLOYMENT_FIELDS}


# Settings the engine resolves when left automatic, and the engine_info() key holding the resolved value.
RESOLVED_KEYS = {"context_length": "max_context_length", "max_running_requests": "max_running_requests",
                 "chunked_prefill_size": "chunked_prefill_size"}


def running_values(current: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """What the engine runs with: the settings, with automatic ones replaced by the engine's resolution."""
    running = _fields(current)
    for field, key in RESOLVED_KEYS.items():
        if info.get(key) is not None:
            running[field] = info[key]
    return running


def deployment_state(rt: AdminRuntime) -> dict[str, Any]:
    sup = rt.ctx.supervisor
    current = sup.current_args()
    models = list_models(rt.ctx.models_dir)
    gpu_count = sup.gpu_count()
    current_model = selected_model(models, str(current.get("model_path", "")), [str(current.get("model_path", ""))])
    choices = [m.to_dict() for m in models]
    if current_model is not None and current_model not in models:
        # Started from a path outside --models-dir (or without one): still listed in the form, with its limits.
        choices.insert(0, current_model.to_dict())
    return {
        "current": _fields(current),
        "running": running_values(current, sup.engine_info()),
        "flags": _fields(rt.flag_args),
        "effective_source": effective_source(rt.db),
        "precedence": PRECEDENCE,
        "supervisor": sup.status(),
        "applying": rt.deploy.is_applying,
        "pending_profile_id": rt.deploy.pending_profile_id,
        "last_result": rt.deploy.last_result,
        "models_dir": rt.ctx.models_dir,
        "models": [m.to_dict() for m in models],
        "choices": choices,
        "hardware": {"gpu_count": gpu_count, "gpu_memory_mib": rt.gpu.memory_total_mib()},
        "limits": {
            "tp_size": [1, max(gpu_count, 1)],
            "mem_fraction_static": list(MEM_FRACTION_RANGE),
            "context_length_max": current_model.max_context if current_model else None,
        },
    }


def validate_form(rt: AdminRuntime, form: dict[str, Any]) -> dict[str, Any]:
    sup = rt.ctx.supervisor
    try:
        return validate_deployment(form, models=list_models(rt.ctx.models_dir), current_args=sup.current_args(),
                                   gpu_count=sup.gpu_count(), gpu_mem_total_mib=rt.gpu.memory_total_mib(),
                                   flag_model_path=rt.flag_args.get("model_path"))
    except DeploymentInvalid as exc:
        raise AdminError(400, f"Invalid deployment: {exc}", "invalid_deployment", fields=exc.errors) from exc


async def apply_fields(rt: AdminRuntime, op: Operator, fields: dict[str, Any], *, reset: bool = False) -> int:
    try:
        return await rt.deploy.start_apply(fields, op.actor, reset=reset)
    except ApplyInProgress as exc:
        raise AdminError(409, str(exc), "apply_in_progress") from exc


async def reset_to_flags(rt: AdminRuntime, op: Operator) -> int | None:
    """Forgets the saved deployment; restarts with the flag values when they differ from what runs."""
    await asyncio.to_thread(deactivate_profiles, rt.db)
    flags = _fields(rt.flag_args)
    if flags == _fields(rt.ctx.supervisor.current_args()):
        await asyncio.to_thread(audit.record, rt.db, op.actor, "deployment_reset", None, {"restart": False})
        return None
    return await apply_fields(rt, op, flags, reset=True)


@router.get("/api/deployment")
def api_get_deployment(op: Operator = Depends(api_operator), rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return deployment_state(rt)


@router.put("/api/deployment", status_code=202)
async def api_put_deployment(body: dict[str, Any] = Body(...), op: Operator = Depends(api_operator),
                             rt: AdminRuntime = Depends(get_runtime)) -> JSONResponse:
    fields = await asyncio.to_thread(validate_form, rt, body)
    profile_id = await apply_fields(rt, op, fields)
    return JSONResponse({"status": "applying", "profile_id": profile_id, "args": fields}, status_code=202)


@router.delete("/api/deployment")
async def api_reset_deployment(op: Operator = Depends(api_operator),
                               rt: AdminRuntime = Depends(get_runtime)) -> JSONResponse:
    profile_id = await reset_to_flags(rt, op)
    if profile_id is None:
        return JSONResponse({"status": "flags", "profile_id": None})
    return JSONResponse({"status": "applying", "profile_id": profile_id}, status_code=202)


@router.get("/api/models")
def api_models(op: Operator = Depends(api_operator), rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return {"models_dir": rt.ctx.models_dir, "models": [m.to_dict() for m in list_models(rt.ctx.models_dir)]}
