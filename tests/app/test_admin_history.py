"""Dashboard history: the server's ring buffer of samples, with request, error and 429 counts taken
from real traffic through the KeyGate."""

from __future__ import annotations

import time

import pytest

from app.admin.fakes import FakeMetrics, FakeSupervisor
from app.admin.gpu import GpuSampler
from app.admin.history import MetricsHistory, RequestTally
from app.admin.keys import build_spec

pytestmark = pytest.mark.asyncio


async def test_history_counts_requests_errors_and_429s(console, app) -> None:
    c, _ = console
    rt = app.state.demo.ctx.runtime
    _info, secret = rt.keys.create(build_spec(name="one-per-minute", rpm=1), "test")
    rt.gate.invalidate()
    baseline = rt.history.take()
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"Authorization": f"Bearer {secret}"}
    assert (await c.post("/v1/chat/completions", json=body, headers=auth)).status_code == 200
    assert (await c.post("/v1/chat/completions", json=body, headers=auth)).status_code == 429
    assert (await c.post("/v1/chat/completions", json=body, headers=auth)).status_code == 429
    bad = {"Authorization": "Bearer tsk-not-a-key"}
    assert (await c.post("/v1/chat/completions", json=body, headers=bad)).status_code == 401
    rt.history.take()
    r = (await c.get("/admin/api/metrics/history", params={"after": baseline["ts"]})).json()
    assert r["interval_s"] == 1.5 and r["window_s"] == 900
    samples = r["samples"]
    assert samples and all(s["ts"] > baseline["ts"] for s in samples)
    # The background sampler may have split the traffic over several samples: the sums are exact.
    assert sum(s["requests"]["errors"] for s in samples) == 1
    assert sum(s["requests"]["rate_limited"] for s in samples) == 2
    assert any(s["requests"]["per_s"] > 0 for s in samples)
    assert samples[-1]["requests_total"] == {"requests": 4, "errors": 1, "rate_limited": 2}
    assert samples[-1]["engine"]["kv_total_tokens"] == 65536 and samples[-1]["supervisor"]["state"] == "ready"
    everything = (await c.get("/admin/api/metrics/history")).json()["samples"]
    assert len(everything) >= len(samples) + 1  # the baseline and anything the thread took before
    live = (await c.get("/admin/api/metrics")).json()
    assert live["requests_total"] == {"requests": 4, "errors": 1, "rate_limited": 2}


async def test_ring_buffer_keeps_the_window(tmp_path) -> None:
    sup = FakeSupervisor({"model_path": str(tmp_path)})
    history = MetricsHistory(FakeMetrics(sup), GpuSampler(), sup, RequestTally(), interval_s=1.0, window_s=3.0)
    taken = [history.take()["ts"] for _ in range(5)]
    assert [s["ts"] for s in history.samples()] == taken[-3:]
    assert history.samples(after=taken[3]) == history.samples()[-1:]
    assert history.samples()[0]["requests"]["per_s"] == 0.0  # no traffic between samples


async def test_sampler_thread_fills_history_without_a_browser(tmp_path) -> None:
    sup = FakeSupervisor({"model_path": str(tmp_path)})
    history = MetricsHistory(FakeMetrics(sup), GpuSampler(), sup, RequestTally(), interval_s=0.05, window_s=60)
    history.start()
    try:
        deadline = time.monotonic() + 10
        while len(history.samples()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        history.close()
    assert len(history.samples()) >= 3
    n = len(history.samples())
    time.sleep(0.2)
    assert len(history.samples()) == n  # closed: no more samples


async def test_dashboard_page_reads_history(console) -> None:
    c, _ = console
    page = (await c.get("/admin/")).text
    assert 'data-history-url="/admin/api/metrics/history"' in page and 'data-max-points="600"' in page
    for chart in ('data-chart="rate"', 'data-chart="errors"'):
        assert chart in page
