"""Usage: per-request rows, daily roll-ups, retention, CSV, the batched writer under load, SQLite setup."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app.admin import audit
from app.admin.keys import build_spec
from app.db import Database, UsageEvent, utcnow, write_usage_batch
from app.db.models import UsageDaily, UsageRecord
from app.db.retention import RetentionSettings, prune_usage

pytestmark = pytest.mark.asyncio


@pytest.fixture
def demo_api_key() -> str:
    return "static-key"


async def test_usage_rows_rollups_and_csv(console, app) -> None:
    c, h = console
    rt = app.state.demo.ctx.runtime
    _, alpha = rt.keys.create(build_spec(name="alpha"), "t")
    _, beta = rt.keys.create(build_spec(name="=beta"), "t")  # a name a spreadsheet would run as a formula
    rt.gate.invalidate()
    for secret, prompt, completion, cached, status in [
        (alpha, 10, 20, 4, 200), (alpha, 5, 0, 0, 500), (beta, 7, 3, 7, 200), ("static-key", 1, 1, 0, 200)
    ]:
        adm = await rt.gate.admit(f"Bearer {secret}", "tiny-llama", prompt + 50)
        await rt.gate.settle(adm, prompt, completion, cached, 0.25, status)
    from app.admin.gate import GateError

    with pytest.raises(GateError):
        await rt.gate.admit("Bearer not-a-key", "tiny-llama", 10)
    rt.usage.flush()
    with rt.db.session() as s:
        rows = s.scalars(select(UsageRecord).order_by(UsageRecord.id)).all()
        assert [(r.auth, r.prompt_tokens, r.completion_tokens, r.cached_tokens, r.status_code) for r in rows] == [
            ("key", 10, 20, 4, 200), ("key", 5, 0, 0, 500), ("key", 7, 3, 7, 200), ("static", 1, 1, 0, 200),
            ("unauthorized", 0, 0, 0, 401)]
        assert rows[-1].key_id is None
        assert rows[0].latency_ms == pytest.approx(250.0)
        daily = {d.key_ref: d for d in s.scalars(select(UsageDaily))}
    assert daily[1].requests == 2 and daily[1].errors == 1 and daily[1].prompt_tokens == 15
    assert daily[-1].requests == 1  # the static --api-key has its own row

    report = (await c.get("/admin/api/usage?days=7")).json()
    by_name = {r["key_name"]: r for r in report["rows"]}
    assert by_name["alpha"]["requests"] == 2 and by_name["alpha"]["completion_tokens"] == 20
    assert by_name["alpha"]["avg_latency_ms"] == pytest.approx(250.0)
    assert by_name["=beta"]["cached_tokens"] == 7 and "(static --api-key)" in by_name
    assert by_name["(rejected: no valid key)"]["errors"] == 1
    assert report["totals"]["requests"] == 5
    assert len(report["chart"]["labels"]) == 7 and report["chart"]["tokens"]["alpha"][-1] == 35
    only = (await c.get("/admin/api/usage?key_id=1")).json()
    assert [r["key_name"] for r in only["rows"]] == ["alpha"]

    r = await c.get("/admin/api/usage.csv?days=7")
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    parsed = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["key_name"] for row in parsed} == {"alpha", "'=beta", "(static --api-key)",
                                                   "(rejected: no valid key)"}
    assert (await c.get("/admin/api/usage?format=csv")).text.splitlines()[0].startswith("day,key_id,key_name")
    page = await c.get("/admin/usage")
    assert page.status_code == 200 and "alpha" in page.text and 'id="usage-chart"' in page.text


async def test_rollups_survive_raw_retention(console, app) -> None:
    c, h = console
    rt = app.state.demo.ctx.runtime
    now = utcnow()
    events = [UsageEvent("m", "anonymous", None, 1, 2, 0, 5.0, 200, ts=now - timedelta(days=age))
              for age in (0, 40, 40, 500)]
    write_usage_batch(rt.db, events)
    r = await c.put("/admin/api/settings", headers=h, json={"usage_retention_days": 30, "rollup_retention_days": 400})
    assert r.status_code == 200 and r.json()["pruned_raw_rows"] == 3 and r.json()["pruned_rollups"] == 1
    with rt.db.session() as s:
        assert s.scalar(select(func.count(UsageRecord.id))) == 1
        days = sorted(d.requests for d in s.scalars(select(UsageDaily)))
    assert days == [1, 2]  # today's row and the 40-day-old roll-up of two requests
    report = (await c.get("/admin/api/usage?days=60")).json()
    assert report["totals"]["requests"] == 3
    assert (await c.get("/admin/api/settings")).json() == {"usage_retention_days": 30, "rollup_retention_days": 400}
    r = await c.put("/admin/api/settings", headers=h, json={"usage_retention_days": 30, "rollup_retention_days": 10})
    assert r.status_code == 400
    assert prune_usage(rt.db, RetentionSettings(1, 1)) == (0, 1)
    assert audit.query(rt.db, action="settings_update")["total"] == 1


async def test_batched_writer_under_load(app) -> None:
    """Many writers, concurrent readers and another connection writing: no 'database is locked'."""
    rt = app.state.demo.ctx.runtime
    errors: list[BaseException] = []
    stop = threading.Event()

    def submit(n: int) -> None:
        for i in range(n):
            rt.usage.submit(UsageEvent(f"model-{i % 3}", "anonymous", None, 3, 4, 1, 2.0, 200))

    def read() -> None:
        try:
            while not stop.is_set():
                with rt.db.session() as s:
                    s.scalar(select(func.count(UsageRecord.id)))
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    def other_writer() -> None:
        try:
            for i in range(40):
                audit.record(rt.db, audit.Actor("load"), "ping", str(i))
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(750,)) for _ in range(4)]
    threads += [threading.Thread(target=read), threading.Thread(target=other_writer)]
    for t in threads:
        t.start()
    for t in threads[:4] + threads[5:]:
        t.join()
    assert rt.usage.flush(timeout_s=30)
    stop.set()
    threads[4].join()
    assert not errors and rt.usage.num_dropped == 0
    with rt.db.session() as s:
        assert s.scalar(select(func.count(UsageRecord.id))) == 3000
        assert s.scalar(select(func.sum(UsageDaily.requests))) == 3000
        assert s.scalar(select(func.sum(UsageDaily.completion_tokens))) == 12000


async def test_sqlite_wal_busy_timeout_and_idempotent_migrations(tmp_path: Path) -> None:
    db = Database.open(str(tmp_path))
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    db.close()
    db2 = Database.open(str(tmp_path))  # second start: upgrade head is a no-op
    with db2.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    db2.close()


async def test_metrics_api_without_gpu(console, app) -> None:
    c, _ = console
    m = (await c.get("/admin/api/metrics")).json()
    assert m["gpu"]["available"] is False and m["gpu"]["reason"]
    assert m["engine"]["model_name"] == "tiny-llama" and 0 <= m["engine"]["token_usage"] <= 1
    assert m["supervisor"]["state"] == "ready"
    app.state.demo.metrics.fail = True  # engine restarting: the dashboard still gets an answer
    m = (await c.get("/admin/api/metrics")).json()
    assert m["engine"]["num_running_reqs"] is None and m["engine_error"]
    page = await c.get("/admin/")
    assert page.status_code == 200 and 'data-chart="gpu-util"' in page.text and "No GPU" in page.text
