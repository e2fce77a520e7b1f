"""Batch-1 decode through fused GEMVs (`LlamaDecoderLayer.forward_single_row`) vs the layer-by-layer path.

On a GPU the model runner turns the fused path on for 16-bit models at TP 1; here it is forced on an
fp32 model so the CPU (Triton interpreter) checks the wiring: norms as prologues, residual adds as
epilogues, Qwen2's qkv bias and Qwen3's q/k norms. Only the summation order differs, so logits must
agree to fp32 rounding and the greedy token must be the same, step after step.
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
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.forward_batch import ForwardMode  # noqa: E402
from engine.kv_manager import KVManager  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402
from engine.req import Req  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402


def _runner(model_path: str, **extra) -> ModelRunner:
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    args = ServerArgs(model_path=model_path, attention_backend="triton" if device.type == "cuda" else "torch_native",
                      max_total_tokens=256, random_seed=0, dtype="float32", disable_cuda_graph=True, **extra)
    return ModelRunner(args, create_model_config(args, device.type), TPContext(), device)


def _decode_steps(runner: ModelRunner, prompt_len: int, steps: int, seed: int):
    """Prefills one greedy request, then yields (request, decode batch) per step; the caller appends the step's
    token to `request.output_ids` before the next."""
    kv = KVManager(runner.kv_pool, runner.req_pool, disable_radix_cache=True)
    rng = random.Random(seed)
    req = Req(rid="r", origin_input_ids=[rng.randrange(10, 300) for _ in range(prompt_len)],
              sampling=SamplingParams(temperature=0))
    assert kv.admit(req) and kv.extend(req, req.fill_len) is not None
    req.extend_len = req.fill_len
    logits = runner.forward(build_forward_batch(ScheduleBatch(ForwardMode.EXTEND, [req]), kv.req_pool,
                                                runner.device))
    req.output_ids.append(int(logits.argmax(-1)))
    for _ in range(steps):
        req.extend_len = 1
        yield req, build_forward_batch(ScheduleBatch(ForwardMode.DECODE, [req], decode_slots=kv.alloc(1)),
                                       kv.req_pool, runner.device)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_fused_single_row_decode_matches_layer_path(tiny_model_factory, arch: str) -> None:
    runner = _runner(tiny_model_factory(arch))
    model = runner.model
    for req, fb in _decode_steps(runner, prompt_len=11, steps=4, seed=1):
        model.fused_gemv = False
        layered = runner.forward(fb).float()  # [1, vocab]
        k_layered = runner.kv_pool.k_buffers[0][fb.out_cache_loc].clone()
        model.fused_gemv = True
        fused = runner.forward(fb).float()
        # Same K/V written for the new token, same logits up to summation order.
        torch.testing.assert_close(runner.kv_pool.k_buffers[0][fb.out_cache_loc], k_layered, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused, layered, atol=1e-4, rtol=1e-4)
        assert int(fused.argmax(-1)) == int(layered.argmax(-1))
        req.output_ids.append(int(fused.argmax(-1)))


def test_fp8_layer_tail_matches_three_gemvs(tiny_model_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`TESSERA_FP8_LAYER_TAIL` (kernels/fp8_layer_tail.py): an FP8 model's o, gate_up and down as one persistent
    launch per layer, against the three fused GEMVs, step after step. The kernel must really run (counted), and
    only the summation order may differ (on the CPU the GEMVs take their default tiles, the tail the lean loop)."""
    from kernels import fp8_layer_tail

    runner = _runner(tiny_model_factory("llama"), quantization="fp8")
    model = runner.model
    model.fused_gemv = True
    calls = []
    real = fp8_layer_tail.fp8_layer_tail

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fp8_layer_tail, "fp8_layer_tail", counted)
    for req, fb in _decode_steps(runner, prompt_len=9, steps=3, seed=2):
        monkeypatch.setattr(fp8_layer_tail, "ENABLED", False)
        three = runner.forward(fb).float()
        assert not calls
        monkeypatch.setattr(fp8_layer_tail, "ENABLED", True)
        tail = runner.forward(fb).float()
        assert len(calls) == len(model.layers)
        calls.clear()
        torch.testing.assert_close(tail, three, atol=1e-4, rtol=1e-4)
        assert int(tail.argmax(-1)) == int(three.argmax(-1))
        req.output_ids.append(int(tail.argmax(-1)))
