"""Rate limits: exact under concurrency, TPM reserve-and-settle, concurrency slots, OpenAI headers."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select

from app.admin.gate import GateError, KeyGate
from app.admin.keys import build_spec
from app.admin.limiter import format_reset
from app.db.models import UsageRecord

pytestmark = pytest.mark.asyncio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def new_key(app, **limits) -> str:
    rt = app.state.demo.ctx.runtime
    _info, secret = rt.keys.create(build_spec(name="limited", **limits), "test")
    rt.gate.invalidate()
    return secret


def clocked_gate(app, clock: FakeClock) -> KeyGate:
    rt = app.state.demo.ctx.runtime
    return KeyGate(rt.db, rt.hasher, rt.usage, clock=clock)


async def test_rpm_exact_under_100_concurrent_http_requests(app) -> None:
    secret = new_key(app, rpm=10)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        async def one() -> httpx.Response:
            return await c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]})

        responses = await asyncio.gather(*(one() for _ in range(100)))
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) == 10 and len(limited) == 90
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(10))
    for r in limited:
        assert r.headers["x-ratelimit-limit-requests"] == "10"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests" and "RPM" in err["message"]
    rt = app.state.demo.ctx.runtime
    rt.usage.flush()
    with rt.db.session() as s:
        statuses = [row.status_code for row in s.scalars(select(UsageRecord))]
    assert statuses.count(200) == 10 and statuses.count(429) == 90


async def test_rpm_exact_on_the_gate_and_retry_after(app) -> None:
    clock = FakeClock()
    gate = clocked_gate(app, clock)
    secret = new_key(app, rpm=10)
    results = await asyncio.gather(*(gate.admit(f"Bearer {secret}", "m", 1) for _ in range(100)),
                                   return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 10
    assert all(isinstance(r, GateError) and r.status == 429 for r in results if isinstance(r, Exception))
    # The oldest admission leaves the window 60 s after it was made.
    clock.now += 45
    with pytest.raises(GateError) as err:
        await gate.admit(f"Bearer {secret}", "m", 1)
    assert err.value.headers["Retry-After"] == "15"
    clock.now += 15.001
    adm = await gate.admit(f"Bearer {secret}", "m", 1)
    assert adm.headers["x-ratelimit-remaining-requests"] == "9"  # all ten left the window together


async def test_tpm_reserve_and_settle(app) -> None:
    clock = FakeClock()
    gate = clocked_gate(app, clock)
    secret = new_key(app, tpm=1000)
    auth = f"Bearer {secret}"
    a = await gate.admit(auth, "m", 600)  # prompt + max tokens reserved
    assert a.headers["x-ratelimit-limit-tokens"] == "1000"
    assert a.headers["x-ratelimit-remaining-tokens"] == "400"
    with pytest.raises(GateError) as err:
        await gate.admit(auth, "m", 500)
    assert err.value.status == 429 and err.value.error_type == "tokens"
    assert err.value.headers["x-ratelimit-remaining-tokens"] == "400"
    assert err.value.headers["Retry-After"] == "60"
    # The request only used 100 tokens: settling frees the rest of the reservation.
    await gate.settle(a, prompt_tokens=60, completion_tokens=40, cached_tokens=0, latency_s=0.1, status_code=200)
    assert gate.limiter.usage(a.ticket.key_id)["tokens"] == 100
    b = await gate.admit(auth, "m", 500)
    assert b.headers["x-ratelimit-remaining-tokens"] == "400"
    await gate.settle(a, 999, 999, 0, 0.1, 200)  # settling twice changes nothing
    assert gate.limiter.usage(a.ticket.key_id)["tokens"] == 600
    # A request that could never fit is refused outright.
    with pytest.raises(GateError) as err:
        await gate.admit(auth, "m", 5000)
    assert "too large" in err.value.message
    # ... with a status the OpenAI SDK never retries, and no Retry-After (waiting cannot help).
    assert err.value.status == 400 and err.value.code == "request_too_large"
    assert "Retry-After" not in err.value.headers and err.value.headers["x-should-retry"] == "false"
    # Everything leaves the window after 60 s.
    clock.now += 61
    c = await gate.admit(auth, "m", 900)
    assert c.headers["x-ratelimit-remaining-tokens"] == "100"


async def test_concurrency_slots(app) -> None:
    gate = clocked_gate(app, FakeClock())
    secret = new_key(app, max_concurrency=3)
    auth = f"Bearer {secret}"
    held = [await gate.admit(auth, "m", 10) for _ in range(3)]
    with pytest.raises(GateError) as err:
        await gate.admit(auth, "m", 10)
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "1"
    assert "concurrent" in err.value.message
    await gate.settle(held[0], 5, 5, 0, None, 499)  # also when the request failed or the client left
    await gate.admit(auth, "m", 10)


async def test_no_limits_means_no_headers(app) -> None:
    gate = clocked_gate(app, FakeClock())
    secret = new_key(app)
    adm = await gate.admit(f"Bearer {secret}", "m", 10**9)
    assert adm.headers == {} and adm.auth == "key"


async def test_format_reset() -> None:
    assert format_reset(0.02) == "20ms"
    assert format_reset(1) == "1s"
    assert format_reset(6.5) == "6.5s"
    assert format_reset(90.5) == "1m30.5s"
    assert format_reset(360) == "6m0s"
