"""`--enable-mixed-chunk`: decodes ride along with prefill chunks as one-token extend rows. Greedy outputs,
logprobs, grammar-constrained rows and stop strings must be exactly what the unmixed scheduler gives, for
requests arriving while others decode (scripted by scheduler step, so independent of machine speed),
with the radix cache on and off and with the overlap scheduler."""

from __future__ import annotations

import math
import re

import pytest

from engine.args import MIN_MIXED_PREFILL_TOKENS, ArgsError, ServerArgs
from engine.mixed_chunk import mixed_prefill_budget
from engine.overlap import CPU_OVERLAP_ENV
from tests.engine.scheduler_harness import STAGGERED_CHUNK as CHUNK
from tests.engine.scheduler_harness import Arrival, SchedulerHarness, generate_msg
from tests.engine.scheduler_harness import staggered_workload as _workload


def test_budget_rule():
    # No decode running: nobody waits on the chunk, it takes the full chunked-prefill size.
    assert mixed_prefill_budget(8192, 1536, 0) == 8192
    assert mixed_prefill_budget(-1, 1536, 0) > 10**9
    # Decodes count one token each against the step budget...
    assert mixed_prefill_budget(8192, 1536, 100) == 1436
    assert mixed_prefill_budget(512, 1536, 100) == 512  # ...never above the chunked-prefill size
    # ...and prompts always move by at least the floor, however many decodes run.
    assert mixed_prefill_budget(8192, 1536, 1400) == MIN_MIXED_PREFILL_TOKENS
    assert mixed_prefill_budget(-1, 1536, 5000) == MIN_MIXED_PREFILL_TOKENS


def test_flags_validated():
    with pytest.raises(ArgsError, match="mixed-chunk-step-tokens"):
        ServerArgs(model_path="/x", load_format="dummy", mixed_chunk_step_tokens=MIN_MIXED_PREFILL_TOKENS - 1)
    with pytest.raises(ArgsError, match="hybrid-long-context-threshold"):
        ServerArgs(model_path="/x", load_format="dummy", hybrid_long_context_threshold=0)
    with pytest.raises(ArgsError, match="no float32 kernels"):
        ServerArgs(model_path="/x", load_format="dummy", device="cuda", attention_backend="hybrid", dtype="float32")


def _run(model: str, arrivals: list[Arrival], **overrides) -> tuple[dict, SchedulerHarness]:
    harness = SchedulerHarness(model, chunked_prefill_size=CHUNK, context_length=512, **overrides)
    return harness.run(arrivals), harness


@pytest.mark.parametrize("radix", ["on", "off"])
def test_greedy_identical_with_and_without_mixing(tiny_llama, radix: str):
    off = radix == "off"
    ref, plain = _run(tiny_llama, _workload(), disable_radix_cache=off)
    got, mixed = _run(tiny_llama, _workload(), disable_radix_cache=off, enable_mixed_chunk=True)
    assert plain.scheduler.num_mixed_steps == 0
    assert mixed.scheduler.num_mixed_steps > 0  # decodes did ride along
    # Mixing saves the decode-only steps that waited behind prefills.
    assert mixed.scheduler.num_forward_steps < plain.scheduler.num_forward_steps
    assert {rid: r.output_ids for rid, r in got.items()} == {rid: r.output_ids for rid, r in ref.items()}
    assert all(len(r.output_ids) == 12 + 3 * int(rid[1:]) for rid, r in got.items())


def test_mixed_with_overlap_scheduler(tiny_llama, monkeypatch):
    ref, _ = _run(tiny_llama, _workload())
    monkeypatch.setenv(CPU_OVERLAP_ENV, "1")
    got, harness = _run(tiny_llama, _workload(), enable_mixed_chunk=True)
    assert harness.scheduler.overlap and harness.scheduler.num_overlapped_steps > 0
    assert harness.scheduler.num_mixed_steps > 0
    assert {rid: r.output_ids for rid, r in got.items()} == {rid: r.output_ids for rid, r in ref.items()}


@pytest.mark.parametrize("overlap", [False, True])
def test_logprobs_grammar_and_stop_strings_ride_along(tiny_llama, monkeypatch, overlap: bool):
    base = _workload()
    # Where the stop string comes from: what request r1 writes unconstrained (tokens 4..6 of its output).
    ref0, plain0 = _run(tiny_llama, base)
    text = plain0.tokenizer.decode(ref0["r1"].output_ids)
    stop = plain0.tokenizer.decode(ref0["r1"].output_ids[4:7]).strip() or text[len(text) // 2:][:3]
    assert stop and stop in text
    special = [
        Arrival(4, generate_msg("lp", [11, 12, 13, 14, 15, 16, 17], max_new_tokens=10, ignore_eos=True,
                                return_logprob=True, logprob_start_len=0, top_logprobs_num=3)),
        Arrival(5, generate_msg("re", [21, 22, 23], max_new_tokens=40, regex=r"(yes|no) [0-9]{3}")),
        Arrival(7, generate_msg("stop", base[1].msg.input_ids, max_new_tokens=base[1].msg.sampling["max_new_tokens"],
                                ignore_eos=True, stop=[stop])),
    ]
    ref, _ = _run(tiny_llama, base + special)
    if overlap:  # grammar rows chain through the overlap path between mixed steps
        monkeypatch.setenv(CPU_OVERLAP_ENV, "1")
    got, harness = _run(tiny_llama, base + special, enable_mixed_chunk=True)
    assert harness.scheduler.overlap == overlap
    assert harness.scheduler.num_mixed_steps > 0
    for rid in ref:
        assert got[rid].output_ids == ref[rid].output_ids, rid
        assert got[rid].finish_reason == ref[rid].finish_reason, rid
    assert ref["stop"].finish_reason == {"type": "stop", "matched": stop}
    assert re.fullmatch(r"(yes|no) [0-9]{3}", harness.tokenizer.decode(got["re"].output_ids, skip_special_tokens=True))
    assert len(got["lp"].output_logprobs) == 10
    for a, b in zip(got["lp"].output_logprobs, ref["lp"].output_logprobs):
        assert a[1] == b[1] and math.isclose(a[0], b[0], abs_tol=1e-4)
    assert [x[1] for x in got["lp"].input_logprobs] == [x[1] for x in ref["lp"].input_logprobs]
