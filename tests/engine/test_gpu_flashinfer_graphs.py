"""FlashInfer decode under CUDA graphs (`pytest -m gpu -o addopts="" tests/engine/test_gpu_flashinfer_graphs.py`).

One tiny bf16 Llama, head_dim 64 and GQA group 4, so FlashInfer JIT-compiles few kernels (group 4 takes
the tensor-core decode path, which runs FlashInfer's prefill kernel). Two levels:
- ModelRunner: flashinfer gets decode graphs, and replaying padded batches (5 -> 8 and 3 -> 4 rows,
  after larger batches left stale rows in the static buffers) gives the eager logits of the real rows
  and writes K/V only to the live rows' slots and scratch slot 0.
- Engine: greedy tokens with graphs + overlap equal flashinfer eager exactly, and agree with triton
  eager on >= 95% of tokens (bf16 kernels round differently). Requests finish at different lengths,
  so decode batches shrink through padded graph sizes.
The padded page table itself is checked on the CPU too.
"""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from tests.engine.hf_reference import greedy_agreement

HAS_FLASHINFER = importlib.util.find_spec("flashinfer") is not None
EAGER = {"disable_cuda_graph": True, "disable_overlap_schedule": True}


def test_padded_kv_indices_give_padded_rows_one_page_at_slot_0() -> None:
    from engine.attention.flashinfer_backend import build_padded_kv_indices

    req_to_token = torch.arange(40, dtype=torch.int32).view(4, 10) + 100  # row r: slots 100 + 10r ...
    req_pool_indices = torch.tensor([2, 0, 7, 7])  # rows 2 and 3 are padding with stale values
    seq_lens = torch.tensor([3, 2, 0, 0], dtype=torch.int32)
    kv = build_padded_kv_indices(req_to_token, req_pool_indices, seq_lens, [3, 2], 4)
    assert kv.indptr_cpu.tolist() == [0, 3, 5, 6, 7]
    assert kv.indices.tolist() == [120, 121, 122, 100, 101, 0, 0]
    assert kv.last_page_len_cpu.tolist() == [1, 1, 1, 1]
    assert kv.indptr_cpu.dtype == kv.indices.dtype == kv.last_page_len_cpu.dtype == torch.int32
    # All rows padding (what a graph is captured with), and no padding at all.
    assert build_padded_kv_indices(req_to_token, req_pool_indices, seq_lens, [], 2).indices.tolist() == [0, 0]
    assert build_padded_kv_indices(req_to_token, req_pool_indices[:2], seq_lens[:2], [3, 2], 2).indptr_cpu.tolist() \
        == [0, 3, 5]


def _build_model(out_dir: str) -> str:
    from tests.fixtures.tiny_models import build_gpu_llama

    return build_gpu_llama(out_dir, num_key_value_heads=1)


def gpu_flashinfer(test):
    """Marks a test as a GPU test that needs FlashInfer (the GPU image installs it, so it runs there)."""
    for mark in (pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
                 pytest.mark.skipif(not HAS_FLASHINFER, reason="needs flashinfer-python (the GPU image has it)")):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def gqa4_llama(tmp_path_factory) -> str:
    return _build_model(str(tmp_path_factory.mktemp("gqa4_llama")))


# ---- ModelRunner: padded replay vs eager -------------------------------------------------------------

def _runner(path: str):
    from engine.args import ServerArgs
    from engine.distributed.parallel_state import TPContext
    from engine.model_config import create_model_config
    from engine.model_runner import ModelRunner

    args = ServerArgs(model_path=path, device="cuda", dtype="bfloat16", attention_backend="flashinfer",
                      max_total_tokens=4096, max_running_requests=16, cuda_graph_max_bs=8, random_seed=0)
    return ModelRunner(args, create_model_config(args, "cuda"), TPContext(), torch.device("cuda", 0))


def _eager(runner, fb) -> torch.Tensor:
    graphs, runner.graph_runner = runner.graph_runner, None
    try:
        return runner.forward(fb)
    finally:
        runner.graph_runner = graphs


@gpu_flashinfer
def test_padded_graph_replay_matches_eager(gqa4_llama: str) -> None:
    from engine.batch_builder import ScheduleBatch, build_forward_batch
    from engine.forward_batch import ForwardMode
    from engine.kv_manager import KVManager
    from engine.req import Req
    from engine.sampling_params import SamplingParams
    from tests.fixtures.tiny_models import prefill_requests

    runner = _runner(gqa4_llama)
    graphs = runner.graph_runner
    assert graphs is not None and graphs.use_graphs, "flashinfer decode was not captured"
    assert sorted(graphs.graphs) == graphs.batch_sizes == [1, 2, 4, 8]
    kv = KVManager(runner.kv_pool, runner.req_pool, disable_radix_cache=True)
    rng = random.Random(0)
    # Lengths around and past 128, FlashInfer's smallest KV chunk, so long rows are split.
    reqs = [Req(rid=str(i), origin_input_ids=[rng.randrange(10, 300) for _ in range(n)],
                sampling=SamplingParams(temperature=0)) for i, n in enumerate([7, 300, 129, 45, 190])]
    prefill_requests(runner, kv, reqs)
    k0 = runner.kv_pool.k_buffers[0]
    # 5 -> 8, then 3 -> 4 and 1 after larger batches, 4 (no padding), 5 -> 8 again.
    for step, live in enumerate([reqs, reqs[:3], reqs[1:2], reqs[1:], reqs, reqs[2:5]]):
        for req in live:
            req.extend_len = 1
        fb = build_forward_batch(ScheduleBatch(ForwardMode.DECODE, live, decode_slots=kv.alloc(len(live))),
                                 kv.req_pool, runner.device)
        eager = _eager(runner, fb)
        before = k0.clone()
        graphs.input_ids[len(live):] = 5  # stale rows from a larger batch now hold other tokens
        replayed = runner.forward(fb)  # the graph of the padded size
        err = (replayed - eager).abs().max().item()
        scale = eager.abs().max().item()
        assert err <= 0.03 * scale, f"step {step} ({len(live)} rows): graph logits off by {err:.4f} (max {scale:.2f})"
        # The live rows rewrote their own slots; no other slot but scratch slot 0 may change.
        untouched = torch.ones(k0.shape[0], dtype=torch.bool, device=k0.device)
        untouched[0] = False
        untouched[fb.out_cache_loc] = False
        assert torch.equal(k0[untouched], before[untouched]), f"step {step}: a padded row wrote a real KV slot"
        for req, tok in zip(live, eager.argmax(-1).tolist()):
            req.output_ids.append(tok)


# ---- Engine: greedy tokens ---------------------------------------------------------------------------

def _prompts(vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(1)
    shared = [rng.randrange(10, vocab) for _ in range(100)]
    five = [[rng.randrange(10, vocab) for _ in range(n)] for n in (5, 240, 60, 131, 17)]
    three = [shared + [rng.randrange(10, vocab) for _ in range(n)] for n in (3, 40, 90)]
    return five, three


def _generate(path: str, **kwargs) -> list[list[int]]:
    from engine import Engine

    five, three = _prompts(384)
    outs = []
    with Engine(model_path=path, device="cuda", dtype="bfloat16", random_seed=0, cuda_graph_max_bs=8,
                skip_tokenizer_init=True, **kwargs) as engine:
        # Finishing at different lengths, the decode batch shrinks 5 (-> 8), 4, 3 (-> 4), 2, 1.
        for prompts in (five, three):
            params = [{"max_new_tokens": 8 + 7 * i, "temperature": 0, "ignore_eos": True} for i in range(len(prompts))]
            outs += [o["output_ids"] for o in engine.generate(input_ids=prompts, sampling_params=params)]
        info = engine.get_server_info()
    assert info["kv_protected_tokens"] == 0
    if not kwargs.get("disable_overlap_schedule"):
        assert info["num_overlapped_steps"] > 0, "overlap scheduling never chained a decode step"
    return outs


@pytest.fixture(scope="module")
def flashinfer_graph_tokens(gqa4_llama: str) -> list[list[int]]:
    return _generate(gqa4_llama, attention_backend="flashinfer")  # CUDA graphs and overlap are on by default


@gpu_flashinfer
def test_graph_tokens_equal_flashinfer_eager(gqa4_llama: str, flashinfer_graph_tokens) -> None:
    eager = _generate(gqa4_llama, attention_backend="flashinfer", **EAGER)
    assert [len(o) for o in flashinfer_graph_tokens] == [len(o) for o in eager]
    bad = [i for i, (g, e) in enumerate(zip(flashinfer_graph_tokens, eager)) if g != e]
    assert not bad, f"prompts {bad} differ; first: {flashinfer_graph_tokens[bad[0]]} vs {eager[bad[0]]}"


@gpu_flashinfer
def test_graph_tokens_agree_with_triton_eager(gqa4_llama: str, flashinfer_graph_tokens) -> None:
    triton = _generate(gqa4_llama, attention_backend="triton", **EAGER)
    score = greedy_agreement(flashinfer_graph_tokens, triton)
    print(f"flashinfer graphs + overlap vs triton eager (bf16): agreement {score:.3f}")
    assert score >= 0.95, f"bf16 greedy agrees with triton eager on only {score:.0%} of tokens"

