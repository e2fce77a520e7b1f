"""SGLang's native routes besides /generate, plus the probes (/health, /health_generate, /ready, /live)
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
from app.role_markers import compute_role_markers
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


def _role_markers(ctx: AppContext) -> dict[str, Any] | None:
    # Rendered once per tokenizer (a restart with another model brings a new one).
    tokenizer = getattr(ctx.supervisor.client, "tokenizer", None)
    cached = ctx.extras.get("role_markers")
    if cached is None or cached[0] is not tokenizer:
        cached = (tokenizer, compute_role_markers(tokenizer, ctx.chat_template))
        ctx.extras["role_markers"] = cached
    return cached[1]


def _model_info(ctx: AppContext) -> dict[str, Any]:
    args = ctx.args
    engine_info = dict(getattr(ctx.supervisor.client, "model_info", None) or {})
    return {
        **engine_info,
        "chat_template_roles": _role_markers(ctx),
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
    args["served_model_name"] = ctx.model_name  # resolved, as SGLang reports it (routers read it)
    # The backend the engine chose when the flag is unset (SGLang reports its resolved choice too).
    # Likewise the automatic prefill chunk (by GPU memory) and interleave budget (off with mixed chunks).
    resolved = sup.engine_info()
    for key in ("attention_backend", "chunked_prefill_size"):
        args[key] = resolved.get(key) or args.get(key)
    args["interleave_prefill_tokens"] = ctx.args.prefill_interleave_tokens
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
    """SGLang's AbortReq. Its bookkeeping keys (set by SGLang's own processes) change nothing here."""

    model_config = ConfigDict(extra="forbid")
    rid: str | None = ""
    abort_all: bool = False
    finished_reason: dict[str, Any] | None = None
    abort_message: str | None = None
    weight_versions: Any = None
    http_worker_ipc: str | None = None


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
        running = set(client.inflight_rids)
        rids = (ctx.rid_groups.get(body.rid, set()) | {body.rid}) & running
        if not rids:
            # SGLang answers 200 whatever the rid; the body says nothing was aborted, and why.
            return {"success": False, "aborted": [],
                    "message": f"No running request has rid {body.rid!r} (unknown or already finished)."}
    for rid in rids:
        await client.abort(rid)
    return {"success": True, "aborted": sorted(rids)}


def _require_serving(ctx: AppContext) -> None:
    """SGLang's probe contract: 503 while the engine starts, restarts, drains or has failed."""
    sup = ctx.supervisor
    client = sup.client
    if not sup.is_ready or client is None or not client.is_alive:
        detail = f": {sup.error}" if sup.state == "failed" and sup.error else ""
        raise unavailable(f"Not serving: the engine is {sup.state}{detail}.")


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 only when a generation would be served (routers and load balancers route on this)."""
    ctx = _ctx(request)
    _require_serving(ctx)
    sup = ctx.supervisor
    problem = getattr(sup, "health_problem", None)  # --dp-size: more GPUs out than --max-unhealthy-gpus
    if problem is not None and (text := problem()) is not None:
        raise unavailable(text)
    return JSONResponse({"status": "ok", "state": sup.state})


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Kubernetes readiness: the same contract as /health."""
    ctx = _ctx(request)
    _require_serving(ctx)
    return JSONResponse({"status": "ready", "model": ctx.supervisor.model_name})


@router.get("/live")
async def live(request: Request) -> JSONResponse:
    """Liveness: the API process answers, whatever the engine is doing (weights may load for minutes)."""
    return JSONResponse({"status": "alive", "state": _ctx(request).supervisor.state})


@router.get("/health_generate")
async def health_generate(request: Request) -> JSONResponse:
    """A one-token generation through the whole engine; 503 if it does not finish in time."""
    ctx = _ctx(request)
    _require_serving(ctx)
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
