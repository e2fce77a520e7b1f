"""The L2 prefetch beside batch-1 attention (`kernels.l2_prefetch`) through the real engine (`pytest -m gpu`).

It issues reads of weights into L2 on a side stream and never writes: a batch-1 greedy run (CUDA graphs and
overlap scheduling on) must give the same tokens and the same logprobs with a budget as with none.
"""

from __future__ import annotations

import pytest

from tests.engine.test_gpu_pdl import _run

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_llama(tmp_path_factory) -> str:
    from tests.fixtures.tiny_models import build_gpu_llama

    return build_gpu_llama(str(tmp_path_factory.mktemp("gpu_llama_l2")), num_key_value_heads=2)


@pytest.mark.parametrize("quantization", [None, "fp8", "awq"], ids=["bf16", "fp8", "awq"])
def test_l2_prefetch_engine_greedy_identical_gpu(gpu_llama: str, quantization: str | None, tmp_path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path, dtype = gpu_llama, "bfloat16"
    if quantization == "awq":  # an AutoAWQ checkpoint of the same model, run in fp16 (the CUDA AWQ GEMV's dtype)
        from tests.fixtures.awq_checkpoint import build_awq_pair

        path, dtype = build_awq_pair(gpu_llama, str(tmp_path / "awq"), group_size=128).awq_dir, "float16"
    monkeypatch.setenv("TESSERA_L2_PREFETCH_MB", "0")
    off = _run(path, quantization, dtype)
    monkeypatch.setenv("TESSERA_L2_PREFETCH_MB", "24")  # more than the tiny model's o + gate_up: all of them
    on = _run(path, quantization, dtype)
    assert [ids for ids, _ in on] == [ids for ids, _ in off]
    assert [lps for _, lps in on] == [lps for _, lps in off], "the L2 prefetch changed the logits"
