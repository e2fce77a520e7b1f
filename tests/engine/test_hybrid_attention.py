"""The hybrid attention backend: which sub-backend each batch goes to (unit tests with fakes), that the
graph runner picks its graph set outside the graph from host lengths, and that a hybrid of three
torch_native backends gives the torch_native engine's greedy tokens while really switching between
its decode sub-backends mid-generation, speculative verify rows included."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from engine.attention.base import BaseAttentionBackend
from engine.attention.hybrid import HybridAttentionBackend
from engine.attention.torch_native import TorchNativeAttentionBackend
from engine.forward_batch import ForwardMode
from engine.hybrid_graphs import HybridGraphRunner
from engine.speculative.batch import decode_rows_limit
from tests.engine.scheduler_harness import (
    STAGGERED_CHUNK,
    Arrival,
    SchedulerHarness,
    generate_msg,
    staggered_workload,
)


class FakeBackend(BaseAttentionBackend):
    def __init__(self, kv_pool, name: str, fuses_rotary: bool = True) -> None:
        super().__init__(kv_pool)
        self.name, self.fuses_rotary = name, fuses_rotary
        self.calls: list[str] = []

    def init_forward_metadata(self, forward_batch) -> None:
        self.calls.append("init")

    def init_forward_metadata_replay(self, forward_batch, seq_lens_cpu) -> None:
        self.calls.append("replay")

    def forward(self, q, k, v, layer, forward_batch, rotary=None):
        self.calls.append("forward")
        return self.name


def _batch(mode: ForwardMode, seq_lens: list[int]) -> SimpleNamespace:
    return SimpleNamespace(forward_mode=mode, seq_lens_cpu=seq_lens, batch_size=len(seq_lens))


@pytest.fixture
def hybrid() -> HybridAttentionBackend:
    pool = object()
    return HybridAttentionBackend(pool, FakeBackend(pool, "prefill"), FakeBackend(pool, "short"),
                                  FakeBackend(pool, "long"), long_context_threshold=1000)


def test_pick_by_phase_and_longest_sequence(hybrid):
    assert hybrid.pick(_batch(ForwardMode.EXTEND, [5])) is hybrid.prefill
    assert hybrid.pick(_batch(ForwardMode.EXTEND, [100_000])) is hybrid.prefill  # prefill never goes by length
    assert hybrid.pick(_batch(ForwardMode.DECODE, [1000, 3])) is hybrid.decode_short  # threshold inclusive
    assert hybrid.pick(_batch(ForwardMode.DECODE, [3, 1001])) is hybrid.decode_long  # one long row decides
    # forward delegates to the batch's pick, initialising it first when the caller did not.
    fb = _batch(ForwardMode.DECODE, [2000])
    assert hybrid.forward(None, None, None, None, fb) == "long"
    assert hybrid.decode_long.calls == ["init", "forward"] and hybrid.decode_short.calls == []
    assert hybrid.describe() == "prefill=flashinfer decode=triton (<= 1000 tokens) / flashinfer (> 1000)"


def test_rotary_handed_over_only_when_every_sub_backend_takes_it():
    pool = object()
    mixed = HybridAttentionBackend(pool, FakeBackend(pool, "p"), FakeBackend(pool, "s", fuses_rotary=False),
                                   FakeBackend(pool, "l"), 10)
    assert not mixed.fuses_rotary
    with pytest.raises(AssertionError, match="share one KV pool"):
        HybridAttentionBackend(pool, FakeBackend(object(), "p"), FakeBackend(pool, "s"), FakeBackend(pool, "l"), 10)


class FakeGraphRunner:
    def __init__(self, model, attn_backend, req_to_token, max_bs, device, use_graphs=True, graph_pool=None,
                 inputs=None):
        self.attn_backend, self.graph_pool_in, self.inputs_in = attn_backend, graph_pool, inputs
        self.graph_pool = f"pool-of-{attn_backend.backend.name}"
        self.inputs = f"inputs-of-{attn_backend.backend.name}"
        self.batch_sizes, self.max_bs, self.capture_seconds = [1, 2, 4], 4, 1.0
        self.replays = 0

    def can_run(self, fb) -> bool:
        return fb.forward_mode.is_decode

    def replay(self, fb):
        self.replays += 1
        # The pinned hooks route the hybrid to this runner's sub-backend before the graph replays.
        self.attn_backend.init_forward_metadata_replay(fb, fb.seq_lens_cpu)
        return self.attn_backend.backend.name


def test_graph_runner_picks_its_graph_set_outside_the_graph(hybrid):
    runner = HybridGraphRunner(None, hybrid, None, 4, "cpu", max_seq_len=4096, runner_cls=FakeGraphRunner)
    assert runner.long.graph_pool_in == "pool-of-short"  # one memory pool for both sets
    assert runner.long.inputs_in == "inputs-of-short"  # and one input block per size
    assert runner.capture_seconds == 2.0
    assert runner.replay(_batch(ForwardMode.DECODE, [10, 999])) == "short"
    assert runner.replay(_batch(ForwardMode.DECODE, [10, 1001])) == "long"
    assert hybrid._active is hybrid.decode_long  # the replay hook routed the layers' calls
    assert (runner.num_short_replays, runner.num_long_replays) == (1, 1)
    # Speculative verify rows are sized by what the graphs hold, as with one graph set.
    assert decode_rows_limit(SimpleNamespace(graph_runner=runner)) == 4
    # No sequence can pass the threshold: the long set is never captured.
    short_only = HybridGraphRunner(None, hybrid, None, 4, "cpu", max_seq_len=1000, runner_cls=FakeGraphRunner)
    assert short_only.long is None
    assert short_only.replay(_batch(ForwardMode.DECODE, [1000])) == "short"


class CountingTorchNative(TorchNativeAttentionBackend):
    def __init__(self, kv_pool) -> None:
        super().__init__(kv_pool)
        self.num_tokens = 0

    def forward(self, q, k, v, layer, forward_batch):
        if layer.layer_id == 0:
            self.num_tokens += q.shape[0]
        return super().forward(q, k, v, layer, forward_batch)


def install_counting_hybrid(harness: SchedulerHarness, threshold: int) -> list[CountingTorchNative]:
    """Puts a hybrid of three counting torch_native backends (one pool) under the harness's model."""
    pool = harness.runner.kv_pool
    subs = [CountingTorchNative(pool) for _ in range(3)]
    hybrid = HybridAttentionBackend(pool, *subs, long_context_threshold=threshold,
                                    names=("torch_native", "torch_native", "torch_native"))
    harness.runner.attn_backend = harness.runner.model.attn_backend = hybrid
    return subs


@pytest.mark.parametrize("mixed", [False, True])
def test_hybrid_of_torch_native_gives_the_same_greedy_tokens(tiny_llama, mixed: bool):
    kwargs = {"chunked_prefill_size": STAGGERED_CHUNK, "context_length": 512, "enable_mixed_chunk": mixed}
    ref = SchedulerHarness(tiny_llama, **kwargs).run(staggered_workload())
    harness = SchedulerHarness(tiny_llama, **kwargs)
    subs = install_counting_hybrid(harness, 60)  # prompts 5-70 tokens, outputs 12-33: decodes cross 60
    got = harness.run(staggered_workload())
    assert all(s.num_tokens > 0 for s in subs), [s.num_tokens for s in subs]
    assert {rid: r.output_ids for rid, r in got.items()} == {rid: r.output_ids for rid, r in ref.items()}


def repetitive_workload(vocab_limit: int = 300) -> list[Arrival]:
    """Six requests whose prompts repeat a motif (prompt lookup finds drafts), 20-45 tokens, staggered."""
    rng = random.Random(11)
    arrivals = []
    for i in range(6):
        motif = [rng.randrange(10, vocab_limit) for _ in range(rng.randrange(3, 7))]
        prompt = (motif * 12)[: rng.randrange(20, 46)]
        arrivals.append(Arrival(step=2 * i, msg=generate_msg(f"s{i}", prompt, max_new_tokens=24, ignore_eos=True)))
    return arrivals


def test_hybrid_with_speculative_verify_rows_gives_the_same_greedy_tokens(tiny_llama):
    """Speculative verification runs as decode rows (engine/speculative/batch.py): on the hybrid backend
    those rows are routed by their host lengths like any decode batch, on both sides of the threshold,
    and the output is the non-speculative output."""
    kwargs = {"context_length": 512, "chunked_prefill_size": STAGGERED_CHUNK}
    ref = SchedulerHarness(tiny_llama, **kwargs).run(repetitive_workload())
    harness = SchedulerHarness(tiny_llama, speculative_algorithm="ngram", speculative_num_draft_tokens=3,
                               speculative_ngram_min_match=1, **kwargs)
    subs = install_counting_hybrid(harness, 52)  # prompts 20-45 tokens, 24 out: decodes and verifies cross 52
    got = harness.run(repetitive_workload())
    stats = harness.scheduler.spec.stats()
    assert stats["spec_num_verify_steps"] > 0 and stats["spec_num_accepted_tokens"] > 0
    assert all(s.num_tokens > 0 for s in subs), [s.num_tokens for s in subs]
    assert {rid: r.output_ids for rid, r in got.items()} == {rid: r.output_ids for rid, r in ref.items()}
