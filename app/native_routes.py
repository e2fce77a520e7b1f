"""SGLang's native routes besides /generate, plus the probes (/health, /health_generate, /ready)
and Prometheus' /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict

from app.context import AppContext
from app.errors import APIError, bad_request, unavailable
from app.native_generate import generate
from app.native_protocol import GenerateRequest
from app.request_scope import authorize
from engine.sampling_params import SamplingParams

logger = logging.getLogger(__name__)
router = APIRouter()
HEALTH_GENERATE_TIMEOUT_S = 20.0
VERSION = "0.1.0"


@router.post("/generate", response_model=None)
async def generate_route(body: GenerateRequest, request: Request) -> Response:
    return await generate(body, request)


def _ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def _model_info(ctx: AppContext) -> dict[str, Any]:
    args = ctx.args
    engine_info = dict(getattr(ctx.supervisor.client, "model_info", None) or {})
    return {
        **engine_info,
        "model_path": args.model_path,
        "tokenizer_path": args.resolved_tokenizer_path,
        "served_model_name": ctx.model_name,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "has_image_understanding": False,
        "has_audio_understanding": False,
    }


@router.api_route("/get_model_info", methods=["GET", "POST"])
@router.api_route("/model_info", methods=["GET", "POST"])
async def get_model_info(request: Request) -> dict[str, Any]:
    ctx = _ctx(request)
    await authorize(ctx, request)
    return _model_info(ctx)


@router.api_route("/get_server_info", methods=["GET", "POST"])
@router.api_route("/server_info", methods=["GET", "POST"])
async def get_server_info(request: Request) -> dict[str, Any]:
    ctx = _ctx(request)
    await authorize(ctx, request)
    sup = ctx.supervisor
    info = dict(sup.last_info)
    client = sup.client
    if client is not None and client.is_alive:
        with contextlib.suppress(Exception):  # a slow or dying engine: fall back to the last poll
            info = await asyncio.wait_for(client.get_server_info(), 5.0)
    args = {k: v for k, v in ctx.args.to_dict().items() if k != "api_key"}
    return {
        **args,
        **info,
        "version": VERSION,
        "state": sup.state,
        "error": sup.error,
        "restarts": sup.restarts,
        "num_inflight_http_requests": sup.inflight,
        "engine_pids": client.rank_pids() if client is not None else [],
        # One entry per data-parallel replica, as SGLang reports its DP ranks.
        "internal_states": info.get("replicas") or [info],
        "model_info": _model_info(ctx),
    }


@router.api_route("/flush_cache", methods=["GET", "POST"])
async def flush_cache(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    await authorize(ctx, request)
    # Our own lease counts too: flushing must not race a running request.
    if ctx.supervisor.inflight or getattr(ctx.supervisor.client, "num_inflight", 0):
        raise bad_request(f"{max(ctx.supervisor.inflight, ctx.supervisor.client.num_inflight)} request(s) are "
                          "running; the cache was not flushed. Retry when the server is idle.")
    async with ctx.supervisor.lease() as client:
        out = await client.flush_cache()
    if not out.success:
        raise bad_request(f"The cache was not flushed: {out.message or 'requests are running'}")
    return JSONResponse({"success": True, "message": out.message or "Cache flushed."})


class AbortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rid: str = ""
    abort_all: bool = False


@router.post("/abort_request")
async def abort_request(body: AbortRequest, request: Request) -> dict[str, Any]:
    ctx = _ctx(request)
    await authorize(ctx, request)
    client = ctx.supervisor.client
    if client is None or not client.is_alive:
        raise unavailable("The engine is not running.")
    if body.abort_all:
        rids = set(client.inflight_rids)
    else:
        if not body.rid:
            raise bad_request("Give 'rid' or 'abort_all': true.", "rid")
        rids = ctx.rid_groups.get(body.rid, set()) | {body.rid}
    for rid in rids:
        await client.abort(rid)
    return {"success": True, "aborted": sorted(rids)}


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Liveness: the API process runs. A failed engine (that did not recover) is a 503."""
    sup = _ctx(request).supervisor
    if sup.state == "failed":
        raise unavailable(f"The engine failed: {sup.error}")
    problem = getattr(sup, "health_problem", None)  # --dp-size: more GPUs out than --max-unhealthy-gpus
    if problem is not None and (text := problem()) is not None:
        raise unavailable(text)
    return JSONResponse({"status": "ok", "state": sup.state})


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    sup = _ctx(request).supervisor
    if not sup.is_ready:
        raise unavailable(f"Not ready: the engine is {sup.state}.")
    return JSONResponse({"status": "ready", "model": sup.model_name})


@router.get("/health_generate")
async def health_generate(request: Request) -> JSONResponse:
    """A one-token generation through the whole engine; 503 if it does not finish in time."""
    ctx = _ctx(request)
    async with ctx.supervisor.lease() as client:
        tok = client.tokenizer
        first = getattr(tok, "bos_token_id", None) if tok is not None else None
        ids = [first if isinstance(first, int) else 0]

        async def probe() -> None:
            async for _ in client.generate(ids, SamplingParams.from_dict({"max_new_tokens": 1, "temperature": 0})):
                pass

        try:
            await asyncio.wait_for(probe(), HEALTH_GENERATE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise unavailable(f"The engine did not generate a token within {HEALTH_GENERATE_TIMEOUT_S:.0f}s.") from None
        except Exception as exc:
            raise APIError(503, f"The engine failed the probe: {exc}", code="engine_unavailable") from None
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    ctx = _ctx(request)
    if not ctx.args.enable_metrics:
        raise APIError(404, "Metrics are off (--enable-metrics).", code="not_found")
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
