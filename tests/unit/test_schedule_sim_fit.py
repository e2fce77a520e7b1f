"""bench/schedule_sim.py's fit of the GPU step-time model to a step trace: synthetic traces made from known
coefficients give those coefficients back; what a trace cannot tell keeps the base model's values."""

from __future__ import annotations

import random

import pytest

from bench.schedule_sim import KV_BYTES_PER_TOKEN, StepTimeModel, fit_step_model


def _trace(rng: random.Random, base: float, per_row: float, tbs: float, bs1: float, per_token: float) -> list[dict]:
    rows = []
    for _ in range(300):
        n = rng.randrange(2, 300)
        context = n * rng.randrange(200, 1500)
        gpu = base + per_row * n + context * KV_BYTES_PER_TOKEN / (tbs * 1e9)
        if n > StepTimeModel().graph_max_bs:
            gpu *= 2.5  # an eager step: the GPU waits for host launches (H200: 35.5 vs 14.3 ms)
        rows.append({"mode": "decode", "rows": n, "tokens": n, "context": context, "one_token_rows": 0,
                     "gpu_ms": gpu * rng.uniform(0.999, 1.001)})
    for _ in range(20):
        context = rng.randrange(100, 4000)
        rows.append({"mode": "decode", "rows": 1, "tokens": 1, "context": context, "one_token_rows": 0,
                     "gpu_ms": bs1 + context * KV_BYTES_PER_TOKEN / (tbs * 1e9)})
    for _ in range(40):
        tokens = rng.randrange(256, 8192)
        rows.append({"mode": "extend", "rows": 2, "tokens": tokens, "context": tokens, "one_token_rows": 0,
                     "gpu_ms": per_token * tokens})
    # A mixed step (decode rows riding along) must not count as prefill time per token.
    rows.append({"mode": "extend", "rows": 101, "tokens": 1124, "context": 90000, "one_token_rows": 100,
                 "gpu_ms": 500.0})
    return rows


def test_fit_recovers_the_coefficients_of_a_synthetic_trace() -> None:
    rows = _trace(random.Random(3), base=5.1, per_row=0.011, tbs=2.5, bs1=4.0, per_token=0.031)
    model = fit_step_model(rows)
    assert model.decode_base_ms == pytest.approx(5.1, rel=0.02)
    assert model.decode_per_row_ms == pytest.approx(0.011, rel=0.05)
    assert model.kv_read_tbs == pytest.approx(2.5, rel=0.02)
    assert model.decode_base_bs1_ms == pytest.approx(4.0, rel=0.02)
    assert model.prefill_per_token_ms == pytest.approx(0.031, rel=1e-6)


def test_fit_keeps_what_the_trace_cannot_tell() -> None:
    base = StepTimeModel()
    rows = [{"mode": "decode", "rows": 64, "tokens": 64, "context": 40000, "one_token_rows": 0, "gpu_ms": 7.0},
            {"mode": "extend", "rows": 1, "tokens": 100, "context": 100, "one_token_rows": 0, "gpu_ms": 4.0},
            {"mode": "decode", "rows": 8, "tokens": 8, "context": 4000, "one_token_rows": 0, "gpu_ms": None}]
    assert fit_step_model(rows, base) == base  # one batch size, a short prefill, an untimed (CPU) step
