"""TESSERA_STEP_TRACE: one JSON line per forward of rank 0 (mode, rows, tokens, context), written by a real
engine run and matching the work it did; nothing is written without the variable."""

from __future__ import annotations

import json

import pytest

from engine import Engine
from engine.overlap import CPU_OVERLAP_ENV


@pytest.mark.parametrize("overlap", ["0", "1"])
def test_trace_has_one_line_per_forward(tiny_llama, tmp_path, monkeypatch, overlap: str) -> None:
    # Overlap scheduling (forced on for the CPU) calls the traced forward with its keyword arguments.
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv("TESSERA_STEP_TRACE", str(path))
    monkeypatch.setenv(CPU_OVERLAP_ENV, overlap)
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    with Engine(model_path=tiny_llama, device="cpu", random_seed=0) as engine:
        engine.generate(input_ids=prompts, sampling_params={"max_new_tokens": 4, "temperature": 0,
                                                            "ignore_eos": True})
        steps = engine.get_server_info()["num_forward_steps"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == steps
    extend = [r for r in rows if r["mode"] == "extend"]
    decode = [r for r in rows if r["mode"] == "decode"]
    assert sum(r["tokens"] for r in extend) == 8  # both prompts prefilled once
    # 4 tokens each: the first from the prefill, 3 from decode steps of both rows.
    # Overlapped, a step may be launched for rows that the step before it finishes (void rows).
    decode_rows = sum(r["rows"] for r in decode)
    assert (decode_rows >= 6 if overlap == "1" else decode_rows == 6) and all(r["gpu_ms"] is None for r in rows)
    assert all(b["t"] >= a["t"] for a, b in zip(rows, rows[1:]))


def test_no_trace_without_the_variable(tiny_llama, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TESSERA_STEP_TRACE", raising=False)
    monkeypatch.chdir(tmp_path)
    with Engine(model_path=tiny_llama, device="cpu", random_seed=0) as engine:
        engine.generate(input_ids=[[5, 6, 7]], sampling_params={"max_new_tokens": 2, "temperature": 0})
    assert list(tmp_path.iterdir()) == []



def test_an_unwritable_trace_path_is_a_warning_not_a_failure(tmp_path, monkeypatch, caplog) -> None:
    """Checked when the rank starts: otherwise the first flush (256 steps in) would fail a serving step."""
    from types import SimpleNamespace

    import torch

    from engine.step_trace import maybe_trace

    def forward(fb):
        return None

    runner = SimpleNamespace(device=torch.device("cpu"), forward=forward)
    monkeypatch.setenv("TESSERA_STEP_TRACE", str(tmp_path / "no-such-dir" / "trace.jsonl"))
    assert maybe_trace(runner, 0) is None
    assert runner.forward is forward and "not tracing" in caplog.text
    monkeypatch.setenv("TESSERA_STEP_TRACE", str(tmp_path / "trace.jsonl"))
    assert maybe_trace(runner, 1) is None  # rank 0 only
    assert maybe_trace(runner, 0) is not None and runner.forward is not forward
