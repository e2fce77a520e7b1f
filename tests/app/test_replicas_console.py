"""The console with `--dp-size 2` (fake engines): the replicas panel on the dashboard, its JSON twin, and
replica health transitions in the audit log."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.admin.fakes import login_with_new_password
from app.server import create_app
from engine.args import ServerArgs
from tests.app.fake_engine import FakeBehaviour, FakeEngineClient

pytestmark = pytest.mark.asyncio


async def test_replicas_panel_and_audit(tiny_llama, tmp_path):
    data = str(tmp_path / "data")
    behaviour = FakeBehaviour()
    args = ServerArgs(model_path=tiny_llama, device="cpu", dp_size=2, data_dir=data, health_check_interval=60)
    app = create_app(args, client_factory=lambda a: FakeEngineClient(a, behaviour))
    sup = app.state.ctx.supervisor
    await sup.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as c:
            await login_with_new_password(c, data)
            rows = (await c.get("/admin/api/replicas")).json()["replicas"]
            assert [(r["replica"], r["health"]) for r in rows] == [(0, "healthy"), (1, "healthy")]
            page = (await c.get("/admin/")).text
            assert "Replica 0" in page and "Replica 1" in page and 'hx-get="/admin/partials/replicas"' in page
            behaviour.start_delay_s = 0.5
            sup.replicas[1].client.die("GPU fell off the bus")
            panel = (await c.get("/admin/partials/replicas")).text
            assert "unhealthy" in panel and "GPU fell off the bus" in panel
            for _ in range(100):
                await asyncio.sleep(0.05)
                if sup.replicas[1].health == "healthy":
                    break
            assert sup.replicas[1].health == "healthy"
            await asyncio.sleep(0.3)  # audit rows are written off the event loop
            entries = (await c.get("/admin/api/audit", params={"limit": 50})).json()["entries"]
            mine = [(e["action"], e["target"], e["actor"]) for e in entries if e["action"].startswith("replica_")]
            assert ("replica_unhealthy", "replica 1", "system") in mine
            assert ("replica_healthy", "replica 1", "system") in mine
            down = next(e for e in entries if e["action"] == "replica_unhealthy")
            assert down["detail"] == {"from": "healthy", "to": "unhealthy", "reason": "GPU fell off the bus"}
    finally:
        await sup.shutdown(0.0)
        app.state.admin.ctx.close()
