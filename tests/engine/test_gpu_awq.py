"""AWQ on CUDA through the engine (`pytest -m gpu -o addopts="" tests/engine/test_gpu_awq.py`).

The GPU engine tests' Llama, quantized with AutoAWQ's packing (group 128), runs through the Triton W4A16
kernels: the GEMV at batch-1 decode steps (some prompts finish early, so the last steps run one row), the
GEMM for prefill and batched decode, inside CUDA graphs with overlap. The reference is the unquantized
engine on the same (dequantized) weights. In fp32 the two differ only in summation order: greedy outputs
must agree on >= 99 % of tokens. In fp16 the comparison is teacher-forced (tests/engine/quant_accuracy.py:
free-running greedy on a random tiny model flips at the first rounding difference): weight-only int4 with
the same dequantized weights differs from the fp16 reference by rounding only.
"""

from __future__ import annotations

import pytest
import torch

from tests.engine.hf_reference import greedy_agreement
from tests.engine.quant_accuracy import CUDA, random_prompts, teacher_forced
from tests.engine.test_gpu_engine import EAGER, _run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def awq_pair(tmp_path_factory):
    from tests.fixtures.awq_checkpoint import build_awq_pair
    from tests.fixtures.tiny_models import build_gpu_llama

    base = build_gpu_llama(str(tmp_path_factory.mktemp("gpu_llama_base")), num_key_value_heads=2)
    return build_awq_pair(base, str(tmp_path_factory.mktemp("gpu_awq")), group_size=128)


@pytest.mark.parametrize("config", ["eager", "graph_overlap"])
def test_awq_fp32_matches_dequantized(awq_pair, config: str) -> None:
    extra = EAGER if config == "eager" else {}
    ref = _run(awq_pair.reference_dir, attention_backend="triton", **EAGER)
    got = _run(awq_pair.awq_dir, attention_backend="triton", **extra)
    score = greedy_agreement(got, ref)
    assert score >= 0.99, f"AWQ fp32 {config}: greedy agrees with the dequantized model on only {score:.1%}"


@pytest.mark.parametrize("batch", [12, 1])  # 1: every decode step through the AWQ GEMV
def test_awq_fp16_kernels_match_dequantized(awq_pair, batch: int) -> None:
    got = teacher_forced((awq_pair.reference_dir, CUDA), (awq_pair.awq_dir, CUDA), "float16",
                         random_prompts(batch, seed=batch), steps=32)
    print(f"AWQ fp16 kernels vs the dequantized fp16 model, batch {batch}: {got}")
    assert got.rel_rms_logit_err < 0.05 and got.mean_kl < 0.005 and got.top1_agreement >= 0.9, got
