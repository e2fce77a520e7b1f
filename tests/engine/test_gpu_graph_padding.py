"""CudaGraphRunner's padded static-buffer path, run eagerly (`use_graphs=False`) so it is checked on
the CPU too: padded decode rows must not change the logits of real rows, and must write their K/V
only to scratch slot 0 even when a larger batch left real slots behind in the static buffers; a decode
batch built straight into a graph's input block (engine.graph_inputs) is the same batch as a plain one.

(Named `test_gpu_*` because it belongs with the GPU engine tests; it needs no GPU.)
"""

from __future__ import annotations

import os
import random

import pytest
import torch

# The Triton interpreter must be chosen before any kernel is decorated (no CPU backend exists).
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from engine.args import ServerArgs  # noqa: E402
from engine.batch_builder import ScheduleBatch, build_forward_batch  # noqa: E402
from engine.cuda_graph_runner import CudaGraphRunner, capture_batch_sizes  # noqa: E402
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.forward_batch import ForwardMode  # noqa: E402
from engine.kv_manager import KVManager  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402
from engine.overlap import CPU_OVERLAP_ENV  # noqa: E402
from engine.req import Req  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402
from tests.engine.scheduler_harness import SchedulerHarness, staggered_workload  # noqa: E402
from tests.fixtures.tiny_models import prefill_requests  # noqa: E402


def test_capture_batch_sizes() -> None:
    assert capture_batch_sizes(1) == [1]
    assert capture_batch_sizes(20) == [1, 2, 4, 8, 16, 20]
    sizes = capture_batch_sizes(160)
    assert sizes[:6] == [1, 2, 4, 8, 16, 24] and sizes[-1] == 160 and sizes == sorted(set(sizes))


@pytest.fixture(scope="module")
def runner(tiny_llama) -> ModelRunner:
    # Eager (no captured graphs) on whatever device is present; fp32 so rows compare tightly.
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    args = ServerArgs(model_path=tiny_llama, attention_backend="triton", max_total_tokens=512, random_seed=0,
                      dtype="float32", disable_cuda_graph=True)
    return ModelRunner(args, create_model_config(args, device.type), TPContext(), device)


def _decode(runner: ModelRunner, kv: KVManager, reqs: list[Req]):
    for req in reqs:
        req.extend_len = 1
    batch = ScheduleBatch(ForwardMode.DECODE, reqs, decode_slots=kv.alloc(len(reqs)))
    return build_forward_batch(batch, kv.req_pool, runner.device)


def _four_prefilled(runner: ModelRunner, seed: int) -> tuple[CudaGraphRunner, KVManager, list[Req]]:
    """An eager graph runner for up to 4 rows and four prefilled greedy requests (3-29 prompt tokens)."""
    graphs = CudaGraphRunner(runner.model, runner.attn_backend, runner.req_pool.req_to_token, 4, runner.device,
                             use_graphs=False)
    kv = KVManager(runner.kv_pool, runner.req_pool, disable_radix_cache=True)
    rng = random.Random(seed)
    reqs = [Req(rid=str(i), origin_input_ids=[rng.randrange(10, 300) for _ in range(rng.randrange(3, 30))],
                sampling=SamplingParams(temperature=0)) for i in range(4)]
    prefill_requests(runner, kv, reqs)
    return graphs, kv, reqs


def test_padded_replay_matches_eager(runner: ModelRunner) -> None:
    graphs, kv, reqs = _four_prefilled(runner, seed=0)
    k0 = runner.kv_pool.k_buffers[0]
    for live in (reqs, reqs[:3], reqs[:1]):  # 4 (no padding), then 3 -> 4 and 1 after larger batches
        fb = _decode(runner, kv, live)
        eager = runner.forward(fb)  # --disable-cuda-graph: the plain path
        before = k0.clone()
        graphs.inputs[4].input_ids[len(live):] = 5  # stale rows from the larger batch now hold other tokens
        padded = graphs.replay(fb).float()
        torch.testing.assert_close(padded, eager, atol=1e-5, rtol=1e-5)
        # The live rows rewrote their own slots (same values up to matmul blocking); no other slot
        # but scratch slot 0 may change, whatever stale rows the static buffers held.
        untouched = torch.ones(k0.shape[0], dtype=torch.bool, device=k0.device)
        untouched[0] = False
        untouched[fb.out_cache_loc] = False
        assert torch.equal(k0[untouched], before[untouched])
        torch.testing.assert_close(k0[fb.out_cache_loc], before[fb.out_cache_loc], atol=1e-5, rtol=1e-5)
        for req, tok in zip(live, eager.argmax(-1).tolist()):
            req.output_ids.append(tok)


FB_TENSORS = ("input_ids", "positions", "req_pool_indices", "seq_lens", "out_cache_loc", "prefix_lens", "extend_lens",
              "extend_start_loc", "logits_indices")


def test_decode_built_into_the_graph_inputs(runner: ModelRunner) -> None:
    graphs, kv, reqs = _four_prefilled(runner, seed=1)
    table = runner.req_pool.req_to_token
    for live, chained in ((reqs, False), (reqs[:3], True), (reqs[:1], False)):
        plain = _decode(runner, kv, live)
        eager = runner.forward(plain)
        slots = plain.out_cache_loc.cpu()
        for req in live:  # the same step again, into the block, on the same slots
            req.kv_len -= 1
        table[[r.req_pool_idx for r in live], [r.kv_len for r in live]] = 0  # the block path must store them
        ids = plain.input_ids.clone() if chained else None
        batch = ScheduleBatch(ForwardMode.DECODE, live, decode_slots=slots, input_ids_gpu=ids)
        built = build_forward_batch(batch, kv.req_pool, runner.device, graphs.graph_inputs)
        block = graphs.inputs[graphs.padded_size(len(live))]
        assert built.seq_lens.data_ptr() == block.seq_lens.data_ptr()
        for name in FB_TENSORS:
            assert torch.equal(getattr(built, name), getattr(plain, name)), name
        assert (built.seq_lens_cpu, built.prefix_lens_cpu) == (plain.seq_lens_cpu, plain.prefix_lens_cpu)
        assert torch.equal(table[plain.req_pool_indices, plain.positions].long().cpu(), slots)
        # Padding: nothing to attend, KV only into scratch slot 0, whatever the larger batch left there.
        assert not block.seq_lens[len(live):].any() and not block.out_cache_loc[len(live):].any()
        torch.testing.assert_close(graphs.replay(built).float(), eager, atol=1e-5, rtol=1e-5)
        for req, tok in zip(live, eager.argmax(-1).tolist()):
            req.output_ids.append(tok)


def _staggered_run(model_path: str, graph_max_bs: int | None) -> tuple[dict, list[bool]]:
    """The staggered workload's first five requests through the in-process scheduler with overlap on; with
    `graph_max_bs`, decode steps of up to that many rows go through an eager CudaGraphRunner. Returns the results
    and, per replay, whether its batch had been built straight into the graph's input block."""
    # "auto" passes the triton backend's device check; the harness then runs on the CPU (the interpreter).
    harness = SchedulerHarness(model_path, device="cuda" if torch.cuda.is_available() else "auto",
                               attention_backend="triton", dtype="float32", max_total_tokens=512,
                               disable_cuda_graph=True)
    built_into_block = []
    if graph_max_bs is not None:
        runner = harness.runner
        graphs = CudaGraphRunner(runner.model, runner.attn_backend, runner.req_pool.req_to_token, graph_max_bs,
                                 runner.device, use_graphs=False)
        replay = graphs.replay

        def recording_replay(fb):
            block = graphs.inputs[graphs.padded_size(fb.batch_size)]
            built_into_block.append(fb.seq_lens.data_ptr() == block.seq_lens.data_ptr())
            return replay(fb)

        graphs.replay = recording_replay
        runner.graph_runner = graphs
    results = harness.run(staggered_workload()[:5])
    assert harness.scheduler.num_overlapped_steps > 0
    return {rid: (r.output_ids, r.finish_reason) for rid, r in results.items()}, built_into_block


def test_overlapped_decodes_through_the_graph_inputs(tiny_llama: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Chained steps (the previous step's ids copied in on the device), batches that shrink and grow, and
    # batches too large for the graphs (plain path) all give the greedy tokens of the plain path.
    monkeypatch.setenv(CPU_OVERLAP_ENV, "1")
    expected, _ = _staggered_run(tiny_llama, None)
    got, built_into_block = _staggered_run(tiny_llama, 4)
    assert got == expected
    assert built_into_block and all(built_into_block)
