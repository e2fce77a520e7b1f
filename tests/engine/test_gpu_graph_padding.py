"""CudaGraphRunner's padded static-buffer path, run eagerly (`use_graphs=False`) so it is checked on
the CPU too: padded decode rows must not change the logits of real rows, and must write their K/V
only to scratch slot 0 even when a larger batch left real slots behind in the static buffers.

(Named `test_gpu_*` because it belongs with the GPU engine tests; it needs no GPU.)
"""

from __future__ import annotations

import random

import pytest
import torch

from engine.args import ServerArgs
from engine.batch_builder import ScheduleBatch, build_forward_batch
from engine.cuda_graph_runner import CudaGraphRunner, capture_batch_sizes
from engine.distributed.parallel_state import TPContext
from engine.forward_batch import ForwardMode
from engine.kv_manager import KVManager
from engine.model_config import create_model_config
from engine.model_runner import ModelRunner
from engine.req import Req
from engine.sampling_params import SamplingParams


def test_capture_batch_sizes() -> None:
    assert capture_batch_sizes(1) == [1]
    assert capture_batch_sizes(20) == [1, 2, 4, 8, 16, 20]
    sizes = capture_batch_sizes(160)
    assert sizes[:6] == [1, 2, 4, 8, 16, 24] and sizes[-1] == 160 and sizes == sorted(set(sizes))


@pytest.fixture(scope="module")
def runner(tiny_llama) -> ModelRunner:
    if torch.cuda.is_available():
        pytest.skip("CPU variant; the GPU tests capture real graphs")
    args = ServerArgs(model_path=tiny_llama, attention_backend="triton", max_total_tokens=512, random_seed=0)
    return ModelRunner(args, create_model_config(args, "cpu"), TPContext(), torch.device("cpu"))


def _decode(runner: ModelRunner, kv: KVManager, reqs: list[Req]):
    for req in reqs:
        req.extend_len = 1
    batch = ScheduleBatch(ForwardMode.DECODE, reqs, decode_slots=kv.alloc(len(reqs)))
    return build_forward_batch(batch, kv.req_pool, runner.device)


def test_padded_replay_matches_eager(runner: ModelRunner) -> None:
    graphs = CudaGraphRunner(runner.model, runner.attn_backend, runner.req_pool.req_to_token, 4, runner.device,
                             use_graphs=False)
    kv = KVManager(runner.kv_pool, runner.req_pool, disable_radix_cache=True)
    rng = random.Random(0)
    reqs = [Req(rid=str(i), origin_input_ids=[rng.randrange(10, 300) for _ in range(rng.randrange(3, 30))],
                sampling=SamplingParams(temperature=0)) for i in range(4)]
    for req in reqs:
        assert kv.admit(req) and kv.extend(req, req.fill_len) is not None
        req.extend_len = req.fill_len
    logits = runner.forward(build_forward_batch(ScheduleBatch(ForwardMode.EXTEND, reqs), kv.req_pool, runner.device))
    for req, tok in zip(reqs, logits.argmax(-1).tolist()):
        req.output_ids.append(tok)
    k0 = runner.kv_pool.k_buffers[0]
    for live in (reqs, reqs[:3], reqs[:1]):  # 4 (no padding), then 3 -> 4 and 1 after larger batches
        fb = _decode(runner, kv, live)
        eager = runner.forward(fb)  # graph_runner is None on the CPU: the plain path
        before = k0.clone()
        padded = graphs.replay(fb).float()
        torch.testing.assert_close(padded, eager, atol=1e-5, rtol=1e-5)
        # Real slots were rewritten with the same values; nothing but scratch slot 0 may differ.
        assert torch.equal(k0[1:], before[1:])
        for req, tok in zip(live, eager.argmax(-1).tolist()):
            req.output_ids.append(tok)
