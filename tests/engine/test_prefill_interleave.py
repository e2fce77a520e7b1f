"""`--interleave-prefill-tokens N`: while requests decode, a prefill step computes at most N prompt tokens
and the next step decodes. Scripted by scheduler step (tests/engine/scheduler_harness.py), so the schedule
is checked exactly; greedy outputs must be what the default schedule gives."""

from __future__ import annotations

import pytest

from engine.args import ArgsError, ServerArgs
from engine.forward_batch import ForwardMode
from engine.overlap import CPU_OVERLAP_ENV
from engine.prefill_interleave import interleaved_chunk_size, prefill_may_run
from tests.engine.scheduler_harness import SchedulerHarness, staggered_workload

CHUNK = 64
INTERLEAVE = 8


def test_rules():
    assert interleaved_chunk_size(8192, 0, 100) == 8192  # off
    assert interleaved_chunk_size(8192, 1024, 0) == 8192  # nobody decoding: the whole chunk
    assert interleaved_chunk_size(8192, 1024, 3) == 1024
    assert interleaved_chunk_size(512, 1024, 3) == 512  # never above the chunked-prefill size
    assert interleaved_chunk_size(-1, 1024, 3) == 1024
    assert prefill_may_run(0, 5, True)
    assert prefill_may_run(1024, 0, True)
    assert prefill_may_run(1024, 5, False)
    assert not prefill_may_run(1024, 5, True)


def test_flags_validated():
    with pytest.raises(ArgsError, match="interleave-prefill-tokens must be >= 0"):
        ServerArgs(model_path="/x", load_format="dummy", interleave_prefill_tokens=-1)
    with pytest.raises(ArgsError, match="choose one"):
        ServerArgs(model_path="/x", load_format="dummy", interleave_prefill_tokens=512, enable_mixed_chunk=True)


def _run(model: str, **overrides) -> tuple[dict, list[tuple[str, int, int]]]:
    """Outputs, and per step (mode, prompt tokens computed, requests decoding when it was planned)."""
    harness = SchedulerHarness(model, chunked_prefill_size=CHUNK, context_length=512, **overrides)
    steps: list[tuple[str, int, int]] = []
    plan = harness.scheduler._next_batch

    def recorded():
        decoding = len(harness.scheduler.running)
        batch = plan()
        if batch is not None:
            prompt = sum(r.extend_len for r in batch.reqs) if batch.mode == ForwardMode.EXTEND else 0
            steps.append(("prefill" if batch.mode == ForwardMode.EXTEND else "decode", prompt, decoding))
        return batch

    harness.scheduler._next_batch = recorded
    results = harness.run(staggered_workload())
    return {rid: r.output_ids for rid, r in results.items()}, steps


def _back_to_back_prefills_while_decoding(steps) -> int:
    return sum(1 for a, b in zip(steps, steps[1:]) if a[0] == b[0] == "prefill" and b[2] > 0)


@pytest.mark.parametrize("overlap", [False, True])
def test_decodes_never_wait_for_two_prefill_steps(tiny_llama, monkeypatch, overlap: bool):
    ref, plain_steps = _run(tiny_llama)
    if overlap:
        monkeypatch.setenv(CPU_OVERLAP_ENV, "1")
    got, steps = _run(tiny_llama, interleave_prefill_tokens=INTERLEAVE)
    assert got == ref
    # The default schedule does stall decodes behind consecutive prefills (else this test proves nothing).
    assert _back_to_back_prefills_while_decoding(plain_steps) > 0
    assert _back_to_back_prefills_while_decoding(steps) == 0
    assert all(tokens <= INTERLEAVE for mode, tokens, decoding in steps if mode == "prefill" and decoding)
    # With nothing decoding, a prefill step still takes more than the interleave cap (the first prompt).
    assert any(tokens > INTERLEAVE for mode, tokens, decoding in steps if mode == "prefill" and not decoding)
