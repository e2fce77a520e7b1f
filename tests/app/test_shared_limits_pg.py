"""Two replicas on one PostgreSQL (Debian's `postgresql`, a throwaway cluster started by the test): a key
issued on one works on the other, revoking it on one refuses it on both within the key cache TTL (5 s), and
100 concurrent requests spread over both replicas on an RPM-10 key give exactly 10 x 200 (the counters
live in PostgreSQL: app/admin/shared_limiter.py)."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from app.admin.fakes import login_with_new_password
from app.server import create_app
from engine.args import ServerArgs
from tests.app.fake_engine import FakeEngineClient
from tests.app.server_proc import free_port

pytestmark = pytest.mark.asyncio
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
SECRET = "s" * 64


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; the Debian package's `postgres` user owns the cluster.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_url():
    if not PG_BIN:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = PG_BIN[-1]
    # Not under pytest's tmp dir: the postgres user cannot enter root's private directories.
    root = Path(tempfile.mkdtemp(prefix="tessera-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True)
    port = free_port()
    subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(root / "pg.log"), "-o",
                                 f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        subprocess.run([f"{bindir}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                        "CREATE DATABASE tessera"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/tessera"
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


async def _replica(tiny_llama: str, data_dir: str):
    app = create_app(ServerArgs(model_path=tiny_llama, device="cpu", data_dir=data_dir),
                     client_factory=lambda a: FakeEngineClient(a))
    await app.state.ctx.supervisor.start()
    return app


async def test_two_replicas_share_keys_and_limits(pg_url, tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("TESSERA_SECRET_KEY", SECRET)
    apps = [await _replica(tiny_llama, str(tmp_path / f"r{i}")) for i in range(2)]
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url=f"http://r{i}")
               for i, a in enumerate(apps)]
    try:
        a, b = clients
        csrf = {"X-CSRF-Token": await login_with_new_password(a, str(tmp_path / "r0"))}
        body = {"text": "hi", "sampling_params": {"max_new_tokens": 1}}

        async def gen(c: httpx.AsyncClient, key: str) -> int:
            return (await c.post("/generate", json=body, headers={"Authorization": f"Bearer {key}"})).status_code

        # Issued on replica 0, accepted by replica 1 (same database, same server secret).
        k1 = (await a.post("/admin/api/keys", json={"name": "shared"}, headers=csrf)).json()
        assert await gen(b, k1["key"]) == 200 and await gen(a, k1["key"]) == 200
        # Revoked on replica 0: replica 1 refuses it once its key cache (5 s TTL) refreshes.
        assert (await a.delete(f"/admin/api/keys/{k1['id']}", headers=csrf)).status_code == 200
        assert await gen(a, k1["key"]) == 401
        t0 = time.monotonic()
        while await gen(b, k1["key"]) != 401:
            assert time.monotonic() - t0 < 6.0, "replica 1 still accepts a revoked key"
            await asyncio.sleep(0.2)

        # One RPM-10 key, 100 concurrent requests over both replicas: exactly 10 admitted.
        k2 = (await a.post("/admin/api/keys", json={"name": "rpm10", "rpm": 10}, headers=csrf)).json()
        auth = {"Authorization": f"Bearer {k2['key']}"}
        t0 = time.monotonic()  # replica 1 learns the new key within its cache TTL (this check is not charged)
        while (await b.get("/get_model_info", headers=auth)).status_code != 200:
            assert time.monotonic() - t0 < 6.0, "replica 1 does not know the new key"
            await asyncio.sleep(0.2)
        codes = await asyncio.gather(*(gen(clients[i % 2], k2["key"]) for i in range(100)))
        assert codes.count(200) == 10 and codes.count(429) == 90, sorted(set(codes))
        served = [sum(1 for i, c in enumerate(codes) if c == 200 and i % 2 == r) for r in range(2)]
        assert sum(served) == 10
    finally:
        for c in clients:
            await c.aclose()
        for app in apps:
            await app.state.ctx.supervisor.shutdown(0.0)
            app.state.admin.ctx.close()
