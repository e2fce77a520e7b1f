"""CudaGraphRunner's padded static-buffer path, run eagerly (`use_graphs=False`) so it is checked on
the CPU too: padded decode rows must not change the logits of real rows, and must write their K/V
only to scratch slot 0 even when a larger batch left real slots behind in the static buffers.

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
from engine.req import Req  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402
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


def test_padded_replay_matches_eager(runner: ModelRunner) -> None:
    graphs = CudaGraphRunner(runner.model, runner.attn_backend, runner.req_pool.req_to_token, 4, runner.device,
                             use_graphs=False)
    kv = KVManager(runner.kv_pool, runner.req_pool, disable_radix_cache=True)
    rng = random.Random(0)
    reqs = [Req(rid=str(i), origin_input_ids=[rng.randrange(10, 300) for _ in range(rng.randrange(3, 30))],
                sampling=SamplingParams(temperature=0)) for i in range(4)]
    prefill_requests(runner, kv, reqs)
    k0 = runner.kv_pool.k_buffers[0]
    for live in (reqs, reqs[:3], reqs[:1]):  # 4 (no padding), then 3 -> 4 and 1 after larger batches
        fb = _decode(runner, kv, live)
        eager = runner.forward(fb)  # --disable-cuda-graph: the plain path
        before = k0.clone()
        graphs.input_ids[len(live):] = 5  # stale rows from the larger batch now hold other tokens
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
