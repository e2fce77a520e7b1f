"""The Grafana dashboard shipped in docker/monitoring queries only metrics the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.metrics import _ENGINE_GAUGES, Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "monitoring" / "grafana" / "dashboards" / "tessera.json"


def exported_names() -> set[str]:
    metrics = Metrics(lambda: "m", lambda: {key: 0 for key, _, _ in _ENGINE_GAUGES}, enable_gpu=False)
    metrics.http_requests.labels("m", "/v1/chat/completions", "200").inc()
    for family in (metrics.prompt_tokens, metrics.generation_tokens, metrics.cached_tokens, metrics.ttft,
                   metrics.itl, metrics.e2e):
        family.labels("m")
    metrics.num_requests.labels("m", "stop").inc()
    text = metrics.render().decode()
    names = set(re.findall(r"^(tessera_\w+)", text, re.M))
    # GPU gauges need NVML (absent in CI): take their names from the collector's source.
    gpu_src = (REPO / "app" / "gpu_metrics.py").read_text()
    names |= {f"tessera{m}" for m in re.findall(r'\{self\._prefix\}(_\w+)"', gpu_src)}
    return names


def test_every_dashboard_query_uses_an_exported_metric() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"\btessera_\w+", e)}
    assert len(used) >= 10
    missing = used - exported_names()
    assert not missing, missing
    assert "tessera_gpu_utilization" in used and "tessera_time_to_first_token_seconds_bucket" in used
