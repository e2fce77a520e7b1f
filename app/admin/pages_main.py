"""Pages: dashboard, usage (with retention settings), audit log."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.admin import audit
from app.admin.api_observe import save_settings, usage_data
from app.admin.deps import AdminError, Operator, get_runtime, page_operator
from app.admin.render import render
from app.admin.runtime import PREFIX, AdminRuntime
from app.db.retention import RetentionSettings, load_retention

router = APIRouter()
AUDIT_PAGE_SIZE = 50


def _script_json(value: object) -> str:
    """JSON safe inside <script type="application/json">: a key named "</script>" cannot end the element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@router.get("", include_in_schema=False)
def admin_root() -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get("/")
def dashboard(request: Request, op: Operator = Depends(page_operator),
              rt: AdminRuntime = Depends(get_runtime)) -> Response:
    status = rt.ctx.supervisor.status()
    h = rt.history
    return render(rt, request, "pages/dashboard.html", op=op, title="Dashboard", active="dashboard",
                  model_name=status.get("model_name"), state=status.get("state"), interval_s=h.interval_s,
                  window_min=round(h.window_s / 60), max_points=max(1, int(h.window_s / h.interval_s)),
                  replicas=status.get("replicas") or [])


@router.get("/usage")
def usage_page(request: Request, days: int = Query(30, ge=1, le=3650), key_id: int | None = None,
               op: Operator = Depends(page_operator), rt: AdminRuntime = Depends(get_runtime)) -> Response:
    report = usage_data(rt, days, key_id)
    keys = rt.keys.names()
    query = f"days={days}" + (f"&key_id={key_id}" if key_id is not None else "")
    return render(rt, request, "pages/usage.html", op=op, title="Usage", active="usage", report=report,
                  chart_json=_script_json(report["chart"]), days=days, key_id=key_id, keys=keys, query=query,
                  retention=load_retention(rt.db))


@router.post("/usage/settings")
def usage_settings(request: Request, usage_retention_days: str = Form(""), rollup_retention_days: str = Form(""),
                   op: Operator = Depends(page_operator), rt: AdminRuntime = Depends(get_runtime)) -> Response:
    try:
        settings = RetentionSettings(int(usage_retention_days), int(rollup_retention_days))
    except ValueError as exc:
        raise AdminError(400, "Retention periods must be whole numbers of days.", "invalid_settings") from exc
    result = save_settings(rt, op, settings)
    return render(rt, request, "partials/flash.html", op=op, kind="ok",
                  message=f"Saved: raw rows kept {settings.usage_retention_days} days, daily totals "
                          f"{settings.rollup_retention_days} days ({result['pruned_raw_rows']} old rows pruned).")


@router.get("/audit")
def audit_page(request: Request, page: int = Query(1, ge=1), action: str | None = None,
               op: Operator = Depends(page_operator), rt: AdminRuntime = Depends(get_runtime)) -> Response:
    data = audit.query(rt.db, limit=AUDIT_PAGE_SIZE, offset=(page - 1) * AUDIT_PAGE_SIZE, action=action or None)
    pages = max(1, -(-data["total"] // AUDIT_PAGE_SIZE))
    return render(rt, request, "pages/audit.html", op=op, title="Audit log", active="audit", data=data, page=page,
                  pages=pages, action=action or "")
