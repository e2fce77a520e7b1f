"""The console without an engine: fakes for the supervisor and metrics, and a tiny OpenAI-shaped
`/v1/chat/completions` that goes through the KeyGate exactly as the real routes must.

    python -m app.admin.demo --data-dir /tmp/tessera-demo --port 30080

The browser tests run this; it is also the quickest way to look at the console while developing it.
"""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, profiles
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.admin import AdminContext, GateError, mount_admin
from app.admin.fakes import FakeGpuSampler, FakeMetrics, FakeSupervisor, default_fake_models, served_name


@dataclass(frozen=True)
class DemoParts:
    """What tests reach into: `app.state.demo`."""

    ctx: AdminContext
    supervisor: FakeSupervisor
    metrics: FakeMetrics


def _gate_error(exc: GateError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def create_demo_app(data_dir: str, models_dir: str | None = None, *, api_key: str | None = None,
                    gpu_count: int = 0, restart_delay_s: float = 1.5, fast_hashing: bool = False,
                    fake_gpus: int = 0) -> FastAPI:
    """`fast_hashing` uses argon2's cheapest parameters: for tests only, never for a real console.
    `fake_gpus` > 0 replaces NVML with that many simulated GPUs (and sets the supervisor's GPU count)."""
    gpu_count = fake_gpus or gpu_count
    if models_dir is None:
        models_dir = str(Path(data_dir) / "models")
        if not Path(models_dir).exists():
            default_fake_models(Path(models_dir))
    first = sorted(p for p in Path(models_dir).iterdir() if (p / "config.json").exists() and "broken" not in p.name)
    flag_args = {"model_path": str(first[0]), "served_model_name": None, "tp_size": 1, "context_length": None,
                 "mem_fraction_static": 0.85, "max_running_requests": None, "chunked_prefill_size": None,
                 "schedule_policy": "fcfs", "disable_radix_cache": False, "api_key": api_key}
    supervisor = FakeSupervisor(flag_args, gpu_count=gpu_count, restart_delay_s=restart_delay_s)
    metrics = FakeMetrics(supervisor)
    ctx = AdminContext(data_dir=data_dir, database_url=None, models_dir=models_dir, supervisor=supervisor,
                       metrics=metrics, static_api_key=api_key, flag_args=flag_args,
                       password_hasher=PasswordHasher.from_parameters(profiles.CHEAPEST) if fast_hashing else None,
                       gpu_sampler=FakeGpuSampler(fake_gpus) if fake_gpus else None)
    app = FastAPI(title="Tessera admin demo")
    mount_admin(app, ctx)
    app.state.demo = DemoParts(ctx, supervisor, metrics)
    gate = ctx.gate

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        try:
            await gate.authenticate(request.headers.get("authorization"))
        except GateError as exc:
            return _gate_error(exc)
        name = served_name(supervisor.current_args())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tessera"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        model = body.get("model") or served_name(supervisor.current_args())
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])) + 3
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        try:
            admission = await gate.admit(request.headers.get("authorization"), model, prompt_tokens + max_tokens)
        except GateError as exc:
            return _gate_error(exc)
        started = time.monotonic()
        text = "Hello from the Tessera demo."
        completion_tokens = min(max_tokens, len(text.split()))
        metrics.record_request()
        await gate.settle(admission, prompt_tokens, completion_tokens, 0, time.monotonic() - started, 200)
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": 0}},
        }, headers=admission.headers)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Tessera admin console with a fake engine")
    parser.add_argument("--data-dir", default="./data/demo")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30080)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--gpu-count", type=int, default=0)
    parser.add_argument("--restart-delay", type=float, default=1.5)
    parser.add_argument("--fast-hashing", action="store_true", help="cheap argon2 parameters (tests only)")
    parser.add_argument("--fake-gpus", type=int, default=0, help="simulate this many GPUs instead of NVML")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    app = create_demo_app(args.data_dir, args.models_dir, api_key=args.api_key, gpu_count=args.gpu_count,
                          restart_delay_s=args.restart_delay, fast_hashing=args.fast_hashing,
                          fake_gpus=args.fake_gpus)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
