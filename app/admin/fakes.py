"""Stand-ins for the serving layer's supervisor and metrics, plus fake model directories.

Used by the admin tests and by `python -m app.admin.demo` (the console without an engine).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import struct
import time
from pathlib import Path
from typing import Any

from app.admin.gpu import GpuSampler


def served_name(args: dict[str, Any]) -> str:
    return args.get("served_model_name") or os.path.basename(str(args.get("model_path", "")).rstrip("/"))


FAKE_MAX_RUNNING = 256  # what the fake engine "resolves" an automatic max running requests to
FAKE_CHUNK = 8192  # what the engine picks on a GPU under 120 GiB (engine.schedule_policy)


class FakeSupervisor:
    """Pretends to restart an engine: a model whose path contains `fail_marker` fails to start, and the
    previous deployment is restored before `apply` raises, like the real supervisor."""

    def __init__(self, args: dict[str, Any], *, gpu_count: int = 0, restart_delay_s: float = 0.3,
                 fail_marker: str = "broken") -> None:
        self._args = dict(args)
        self._gpu_count = gpu_count
        self.restart_delay_s = restart_delay_s
        self._fail_marker = fail_marker
        self._state = "ready"
        self._progress: list[str] = []
        self._error: str | None = None
        self.num_applies = 0

    def current_args(self) -> dict[str, Any]:
        return dict(self._args)

    def status(self) -> dict[str, Any]:
        return {"state": self._state, "progress": list(self._progress), "error": self._error,
                "model_name": served_name(self._args)}

    def gpu_count(self) -> int:
        return self._gpu_count

    def engine_info(self) -> dict[str, Any]:
        """Resolves automatic settings like the engine: the model's context, a fixed request cap."""
        if self._state != "ready":
            return {}
        try:
            cfg = json.loads((Path(str(self._args.get("model_path"))) / "config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        return {"max_context_length": self._args.get("context_length") or cfg.get("max_position_embeddings"),
                "max_running_requests": self._args.get("max_running_requests") or FAKE_MAX_RUNNING,
                "chunked_prefill_size": self._args.get("chunked_prefill_size") or FAKE_CHUNK}

    def _log(self, line: str) -> None:
        self._progress.append(f"{time.strftime('%H:%M:%S')} {line}")

    async def apply(self, new_args: dict[str, Any]) -> None:
        self.num_applies += 1
        previous = dict(self._args)
        self._progress, self._error = [], None
        self._state = "draining"
        self._log("draining in-flight requests")
        await asyncio.sleep(self.restart_delay_s / 3)
        self._state = "restarting"
        self._log("stopping engine")
        self._log(f"starting engine: model={new_args.get('model_path')} tp={new_args.get('tp_size')} "
                  f"context={new_args.get('context_length') or 'auto'}")
        await asyncio.sleep(self.restart_delay_s / 3)
        if self._fail_marker and self._fail_marker in str(new_args.get("model_path")):
            error = f"engine exited during start: cannot load weights from {new_args.get('model_path')}"
            self._log(error)
            self._log("restoring the previous deployment")
            await asyncio.sleep(self.restart_delay_s / 3)
            self._args = previous
            self._state, self._error = "ready", error
            self._log("previous deployment ready")
            raise RuntimeError(error)
        self._log("loading weights")
        await asyncio.sleep(self.restart_delay_s / 3)
        self._args = dict(new_args)
        self._state = "ready"
        self._log("engine ready")


class FakeMetrics:
    """Engine metrics that move (so dashboard charts visibly update) plus counters the demo routes bump."""

    def __init__(self, supervisor: FakeSupervisor) -> None:
        self._supervisor = supervisor
        self._t0 = time.monotonic()
        self.num_requests = 0
        self.fail = False

    def record_request(self) -> None:
        self.num_requests += 1

    def snapshot(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("engine unavailable")
        t = time.monotonic() - self._t0
        wave = (math.sin(t / 3.0) + 1) / 2
        total = 65536
        return {
            "num_running_reqs": int(4 + 4 * wave), "num_queued_reqs": int(3 * (1 - wave)),
            "token_usage": round(0.2 + 0.5 * wave, 3), "kv_used_tokens": int(total * (0.2 + 0.5 * wave)),
            "kv_total_tokens": total, "cache_hit_rate": round(0.55 + 0.3 * math.sin(t / 7.0) ** 2, 3),
            "gen_throughput": round(180 + 120 * wave, 1), "ttft_median_s": round(0.04 + 0.03 * wave, 4),
            "model_name": self._supervisor.status()["model_name"],
        }


class FakeGpuSampler(GpuSampler):
    """NVML-shaped numbers for `count` GPUs of 80 GiB, moving over time (demo screenshots, tests)."""

    def __init__(self, count: int) -> None:
        super().__init__(min_interval_s=0.0)
        self._count = count
        self._t0 = time.monotonic()

    def _read(self) -> dict[str, Any]:
        t = time.monotonic() - self._t0
        gpus = []
        for i in range(self._count):
            wave = (math.sin(t / 2.5 + i) + 1) / 2
            gpus.append({"index": i, "name": "Fake H100 80GB", "util_pct": int(40 + 55 * wave),
                         "mem_used_mib": round(62000 + 8000 * wave, 1), "mem_total_mib": 81559.0,
                         "temp_c": int(48 + 20 * wave), "power_w": round(180 + 420 * wave, 1),
                         "power_limit_w": 700.0})
        return {"available": True, "reason": None, "gpus": gpus}

    def close(self) -> None:
        pass


def write_fake_model(path: Path, *, architecture: str = "LlamaForCausalLM", hidden_size: int = 64,
                     num_layers: int = 2, num_heads: int = 4, vocab_size: int = 512, max_context: int = 4096,
                     dtype: str = "bfloat16") -> Path:
    """A model directory with a real config.json and a tiny safetensors file (zeros), enough for the
    catalog to read architecture, dtype, context and an exact parameter count."""
    path.mkdir(parents=True, exist_ok=True)
    config = {"architectures": [architecture], "hidden_size": hidden_size, "num_hidden_layers": num_layers,
              "num_attention_heads": num_heads, "num_key_value_heads": num_heads, "intermediate_size": hidden_size * 4,
              "vocab_size": vocab_size, "max_position_embeddings": max_context, "torch_dtype": dtype,
              "model_type": architecture.replace("ForCausalLM", "").lower()}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    shapes = {"model.embed_tokens.weight": [vocab_size, hidden_size], "lm_head.weight": [vocab_size, hidden_size]}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    with (path / "model.safetensors").open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        f.write(b"\0" * offset)
    return path


def default_fake_models(models_dir: Path) -> list[Path]:
    """Two servable models and one that fails to start (to show the error path)."""
    return [
        write_fake_model(models_dir / "tiny-llama", max_context=4096),
        write_fake_model(models_dir / "tiny-qwen3", architecture="Qwen3ForCausalLM", hidden_size=96, num_heads=6,
                         max_context=32768),
        write_fake_model(models_dir / "broken-model", max_context=2048),
    ]


async def login_with_new_password(client: Any, data_dir: str, new_password: str = "a-new-admin-password") -> str:
    """Logs in with the bootstrap password from the data dir, does the forced change, returns the CSRF
    token (for tests and scripts driving an httpx client against the JSON API)."""
    initial = (Path(data_dir) / "admin_password").read_text().strip()
    r = await client.post("/admin/api/login", json={"username": "admin", "password": initial})
    r.raise_for_status()
    csrf = r.json()["csrf_token"]
    r = await client.post("/admin/api/password", json={"old_password": initial, "new_password": new_password},
                          headers={"X-CSRF-Token": csrf})
    r.raise_for_status()
    return csrf
