"""`TESSERA_PDL=1` through the real engine (`pytest -m gpu -o addopts="" tests/engine/test_gpu_pdl.py`, Hopper).

Programmatic dependent launch (kernels/pdl.py) changes when batch-1 kernels start, never what they compute: the
fused GEMVs (bf16 and FP8), the rotary + KV store and the decode attention wait for the previous kernel before they
read its output. So a batch-1 greedy run, CUDA graphs and overlap scheduling on, must give the same tokens and the
same logprobs with it on as with it off.
"""

from __future__ import annotations

import random

import pytest
import torch

from engine import Engine
from kernels import pdl
from tests.engine.test_gpu_engine import TEST_KV_TOKENS

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_llama(tmp_path_factory) -> str:
    from tests.fixtures.tiny_models import build_gpu_llama

    return build_gpu_llama(str(tmp_path_factory.mktemp("gpu_llama_pdl")), num_key_value_heads=2)


def _run(path: str, quantization: str | None, dtype: str = "bfloat16") -> list[tuple[list[int], list[float]]]:
    rng = random.Random(0)
    prompts = [[rng.randrange(10, 384) for _ in range(rng.randrange(5, 200))] for _ in range(3)]
    params = {"max_new_tokens": 24, "temperature": 0, "ignore_eos": True}
    extra = {"quantization": quantization} if quantization else {}
    outs = []
    with Engine(model_path=path, device="cuda", dtype=dtype, random_seed=0, cuda_graph_max_bs=4,
                attention_backend="triton", skip_tokenizer_init=True, max_total_tokens=TEST_KV_TOKENS,
                **extra) as engine:
        for prompt in prompts:  # one at a time: batch-1 decode steps, the fused path
            out = engine.generate(input_ids=prompt, sampling_params=params, return_logprob=True)
            logprobs = [lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]]
            outs.append((out["output_ids"], logprobs))
    return outs


@pytest.mark.parametrize("quantization", [None, "fp8"], ids=["bf16", "fp8"])
def test_pdl_engine_greedy_identical_gpu(gpu_llama: str, quantization: str | None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The device machine is Hopper with Triton >= 3.4: PDL must really be on, or the comparison proves nothing.
    assert torch.cuda.get_device_capability() >= (9, 0) and pdl.HAS_GDC, "PDL needs sm_90+ and Triton >= 3.4"
    monkeypatch.setenv(pdl.PDL_ENV, "0")
    off = _run(gpu_llama, quantization)
    monkeypatch.setenv(pdl.PDL_ENV, "1")  # the rank process reads it at each launch
    on = _run(gpu_llama, quantization)
    assert [ids for ids, _ in on] == [ids for ids, _ in off]
    assert [lps for _, lps in on] == [lps for _, lps in off], "PDL changed the logits"


@pytest.mark.parametrize("chain", [None, "o,gate_up,down"], ids=["default-edges", "all-edges"])
@pytest.mark.parametrize("quantization", [None, "fp8"], ids=["bf16", "fp8"])
def test_gemv_chain_engine_greedy_identical_gpu(gpu_llama: str, quantization: str | None, chain: str | None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The GEMV chain (kernels/pdl.py `GEMV_CHAIN`, read at import by each fresh rank process), at its defaults
    (unset: gate_up + down for FP8, down for bf16) and with every edge: the named projections let the next GEMV start
    as their programs start; the next one waits for the whole grid before it reads x, so the tokens and logprobs are
    those of the plain launches."""
    assert torch.cuda.get_device_capability() >= (9, 0) and pdl.HAS_GDC, "PDL needs sm_90+ and Triton >= 3.4"
    monkeypatch.setenv("TESSERA_PDL_GEMV_CHAIN", "none")
    off = _run(gpu_llama, quantization)
    if chain is None:
        monkeypatch.delenv("TESSERA_PDL_GEMV_CHAIN")
    else:
        monkeypatch.setenv("TESSERA_PDL_GEMV_CHAIN", chain)
    on = _run(gpu_llama, quantization)
    assert [ids for ids, _ in on] == [ids for ids, _ in off]
    assert [lps for _, lps in on] == [lps for _, lps in off], "the GEMV chain changed the logits"
