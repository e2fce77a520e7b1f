"""Load endpoints that SGLang workers expose and routers poll: `/get_load` (per data-parallel rank:
requests and tokens in flight) and `/v1/loads` (SGLang's richer per-rank snapshot). Both read the cached
engine stats, so they never wait on an engine."""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import APIRouter, Request

from app.context import AppContext
from app.request_scope import authorize

router = APIRouter()
VERSION = "0.1.0"


def _ranks(ctx: AppContext) -> list[dict[str, Any]]:
    info = ctx.supervisor.last_info or {}
    return info.get("replicas") or [{**info, "replica": 0}]


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


@router.get("/get_load")
async def get_load(request: Request) -> list[dict[str, Any]]:
    ctx: AppContext = request.app.state.ctx
    await authorize(ctx, request)
    out = []
    for rank in _ranks(ctx):
        running, waiting = _int(rank.get("num_running_reqs")), _int(rank.get("num_queued_reqs"))
        out.append({"dp_rank": _int(rank.get("replica")), "num_reqs": running + waiting,
                    "num_waiting_reqs": waiting, "num_tokens": _int(rank.get("kv_used_tokens"))})
    return out


@router.get("/v1/loads")
async def loads(request: Request) -> dict[str, Any]:
    ctx: AppContext = request.app.state.ctx
    await authorize(ctx, request)
    engine = dict(getattr(ctx.supervisor.client, "model_info", None) or {})
    rows = []
    for rank in _ranks(ctx):
        rows.append({
            "dp_rank": _int(rank.get("replica")),
            "num_running_reqs": _int(rank.get("num_running_reqs")),
            "num_waiting_reqs": _int(rank.get("num_queued_reqs")),
            "num_used_tokens": _int(rank.get("kv_used_tokens")),
            "num_total_tokens": _int(rank.get("kv_total_tokens")),
            "max_total_num_tokens": _int(rank.get("kv_total_tokens") or engine.get("max_total_tokens")),
            "max_running_requests": _int(engine.get("max_running_requests")),
            "token_usage": float(rank.get("token_usage") or 0.0),
            "gen_throughput": float(rank.get("gen_throughput") or 0.0),
            "cache_hit_rate": float(rank.get("cache_hit_rate") or 0.0),
        })
    return {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(), "version": VERSION,
            "accelerator": None, "num_accelerators": ctx.args.tp_size, "loads": rows}
