"""JSON API: live metrics, usage (JSON and CSV), audit log, retention settings."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from app.admin import audit
from app.admin.deps import AdminError, Operator, api_operator, get_runtime
from app.admin.history import current_payload
from app.admin.runtime import AdminRuntime
from app.admin.usage import usage_csv, usage_report
from app.db.retention import RetentionSettings, load_retention, prune_usage, save_retention

logger = logging.getLogger(__name__)
router = APIRouter()

def metrics_payload(rt: AdminRuntime) -> dict[str, Any]:
    return current_payload(rt.ctx.metrics, rt.gpu, rt.ctx.supervisor, rt.gate.tally)


def usage_data(rt: AdminRuntime, days: int, key_id: int | None) -> dict[str, Any]:
    # Rows still queued in the batched writer would be missing from a report asked for right after a
    # request; a short flush makes "make a call, open the usage page" show it.
    rt.usage.flush(timeout_s=2.0)
    return usage_report(rt.db, rt.keys.names(), days=days, key_id=key_id)


def csv_response(report: dict[str, Any]) -> Response:
    return Response(usage_csv(report), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="tessera-usage-{report["start"]}-{report["end"]}.csv"'})


class RetentionBody(BaseModel):
    usage_retention_days: int
    rollup_retention_days: int


def save_settings(rt: AdminRuntime, op: Operator, settings: RetentionSettings) -> dict[str, Any]:
    try:
        save_retention(rt.db, settings)
    except ValueError as exc:
        raise AdminError(400, str(exc), "invalid_settings") from exc
    raw, daily = prune_usage(rt.db, settings)
    audit.record(rt.db, op.actor, "settings_update", "retention",
                 {**settings.__dict__, "pruned_raw_rows": raw, "pruned_rollups": daily})
    return {**settings.__dict__, "pruned_raw_rows": raw, "pruned_rollups": daily}


@router.get("/api/metrics")
def api_metrics(op: Operator = Depends(api_operator), rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return metrics_payload(rt)


@router.get("/api/metrics/history")
def api_metrics_history(after: float | None = None, op: Operator = Depends(api_operator),
                        rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    h = rt.history
    return {"interval_s": h.interval_s, "window_s": h.window_s, "samples": h.samples(after)}


@router.get("/api/usage", response_model=None)
def api_usage(days: int = Query(30, ge=1, le=3650), key_id: int | None = None, format: str = "json",
              op: Operator = Depends(api_operator), rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any] | Response:
    report = usage_data(rt, days, key_id)
    if format == "csv":
        return csv_response(report)
    return report


@router.get("/api/usage.csv")
def api_usage_csv(days: int = Query(30, ge=1, le=3650), key_id: int | None = None,
                  op: Operator = Depends(api_operator), rt: AdminRuntime = Depends(get_runtime)) -> Response:
    return csv_response(usage_data(rt, days, key_id))


@router.get("/api/audit")
def api_audit(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0), action: str | None = None,
              actor: str | None = None, op: Operator = Depends(api_operator),
              rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return audit.query(rt.db, limit=limit, offset=offset, action=action, actor=actor)


@router.get("/api/settings")
def api_get_settings(op: Operator = Depends(api_operator), rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return load_retention(rt.db).__dict__


@router.put("/api/settings")
def api_put_settings(body: RetentionBody, op: Operator = Depends(api_operator),
                     rt: AdminRuntime = Depends(get_runtime)) -> dict[str, Any]:
    return save_settings(rt, op, RetentionSettings(**body.model_dump()))
