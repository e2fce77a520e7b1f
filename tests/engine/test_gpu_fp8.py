"""FP8 on CUDA through the engine (`pytest -m gpu -o addopts="" tests/engine/test_gpu_fp8.py`).

The GPU engine tests' Llama, quantized into a compressed-tensors FP8_DYNAMIC checkpoint (per-channel
scales) and a `quant_method: fp8` per-tensor one.
- fp32: FP8 layers run the dequantize reference path on CUDA (the kernels need 16-bit activations):
  loading, packing and CUDA graphs through the whole engine; against the unquantized engine on the same
  dequantized weights only summation order differs, so >= 99 % greedy agreement.
- bf16: the real kernels (per-token activation quantization + `_scaled_mm` for prefill and batched
  decode, the weight-only FP8 GEMV at batch-1 decode steps, in CUDA graphs), teacher-forced
  (tests/engine/quant_accuracy.py) against the same arithmetic in torch on the CPU: W8A8 emulated
  (`fp8_w8a8_ref`: the activations quantized per token as the kernel does) for more than one row, the
  weight-only reference for one. Kernel bugs (a wrong scale, layout or row) give errors of order 1; bf16
  rounding differences between two devices give a few percent, amplified where activations are quantized
  (measured values at BARS). Against the dequantized bf16 model the
  error is what W8A8 costs: CPU emulation on this model measured 13 % relative RMS logit error,
  top-1 0.78 (batch 12), 8 % / 0.80 (one request); on the H200 13.1 % / 13.3 %, top-1 0.82 / 0.79.
"""

from __future__ import annotations

import pytest
import torch

from tests.engine.hf_reference import greedy_agreement
from tests.engine.quant_accuracy import CUDA, random_prompts, teacher_forced
from tests.engine.test_gpu_engine import EAGER, _run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CPU = torch.device("cpu")


@pytest.fixture(scope="module", params=["ct-channel", "fp8-tensor"])
def fp8_pair(request, tmp_path_factory):
    from tests.fixtures.fp8_checkpoints import write_fp8_checkpoint
    from tests.fixtures.tiny_models import build_gpu_llama

    base = build_gpu_llama(str(tmp_path_factory.mktemp("gpu_llama_base")), num_key_value_heads=2)
    return write_fp8_checkpoint(base, str(tmp_path_factory.mktemp("gpu_fp8") / request.param), request.param)


@pytest.fixture
def cpu_w8a8(monkeypatch):
    """The CPU reference path computes what the CUDA kernels compute: W8A8 for > 1 row, weight-only for 1."""
    import kernels.fp8_gemm as fp8_gemm

    weight_only = fp8_gemm.fp8_linear_ref

    def emulated(x, w_q, w_scale, bias=None):
        return fp8_gemm.fp8_w8a8_ref(x, w_q, w_scale, bias) if x.shape[0] > 1 else weight_only(x, w_q, w_scale, bias)

    monkeypatch.setattr(fp8_gemm, "fp8_linear_ref", emulated)


def test_fp8_fp32_matches_dequantized(fp8_pair) -> None:
    fp8_dir, ref_dir = fp8_pair
    ref = _run(ref_dir, attention_backend="triton", **EAGER)
    got = _run(fp8_dir, attention_backend="triton")
    score = greedy_agreement(got, ref)
    assert score >= 0.99, f"FP8 fp32: greedy agrees with the dequantized model on only {score:.1%}"


# Measured on an H200 (2026-12-02), both layouts: batch 12 rel RMS 0.095 / 0.097, KL 0.0073 / 0.0077, top-1
# 0.83 / 0.84; batch 1 0.035 / 0.035, KL 0.0010, top-1 0.94. At batch 12 every linear quantizes its
# activations, so a bf16 difference upstream (cuBLAS vs CPU summation order) that moves a value across an
# e4m3 rounding boundary costs a whole fp8 step (up to 6 %) there: two W8A8 runs differ by about 70 % of
# what W8A8 costs against bf16 (0.13). Bugs (a wrong scale, row or layout) give errors of order 1.
BARS = {12: (0.15, 0.015, 0.75), 1: (0.06, 0.003, 0.85)}  # rel RMS, mean KL, top-1


@pytest.mark.parametrize("batch", [12, 1])  # 1: every decode step through the FP8 GEMV
def test_fp8_bf16_kernels_match_emulation(fp8_pair, cpu_w8a8, batch: int) -> None:
    fp8_dir, _ = fp8_pair
    got = teacher_forced((fp8_dir, CPU), (fp8_dir, CUDA), "bfloat16", random_prompts(batch, seed=batch), steps=32)
    print(f"FP8 bf16 kernels vs torch emulation, batch {batch}: {got}")
    rms, kl, top1 = BARS[batch]
    assert got.rel_rms_logit_err < rms and got.mean_kl < kl and got.top1_agreement >= top1, got


def test_fp8_bf16_close_to_dequantized(fp8_pair) -> None:
    fp8_dir, ref_dir = fp8_pair
    got = teacher_forced((ref_dir, CUDA), (fp8_dir, CUDA), "bfloat16", random_prompts(12, seed=3), steps=32)
    print(f"FP8 bf16 (W8A8) vs the dequantized bf16 model: {got}")
    assert got.rel_rms_logit_err < 0.25 and got.mean_kl < 0.05 and got.top1_agreement >= 0.6, got


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory) -> str:
    from tests.fixtures.tiny_models import build_gpu_llama

    return build_gpu_llama(str(tmp_path_factory.mktemp("gpu_llama_head")), num_key_value_heads=2)


@pytest.mark.parametrize("batch", [12, 1])  # 1: the LM head through the FP8 GEMV inside the decode graph
def test_fp8_lm_head_kernels_match_emulation(bf16_llama, cpu_w8a8, batch: int) -> None:
    """--lm-head-quantization fp8 on CUDA (`_scaled_mm` / the FP8 GEMV, CUDA graphs) against the same head in
    torch on the CPU; only the head is FP8, so the layers' bars hold with room."""
    got = teacher_forced((bf16_llama, CPU), (bf16_llama, CUDA), "bfloat16", random_prompts(batch, seed=batch),
                         steps=32, lm_head_quantization="fp8")
    print(f"FP8 LM head kernels vs torch emulation, batch {batch}: {got}")
    rms, kl, top1 = BARS[batch]
    assert got.rel_rms_logit_err < rms and got.mean_kl < kl and got.top1_agreement >= top1, got
