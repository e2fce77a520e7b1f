"""The quantized GEMV tile tables (kernels/quant_gemv_configs.py: tables + env overlay files) and the fast
sweep's candidate lists (bench/quant_gemv_sweep.py): bounded, launcher-valid, default first."""

from __future__ import annotations

import json

import pytest
import torch

from bench.quant_gemv_sweep import MAX_CONFIGS, awq_candidates, fp8_candidates
from kernels import quant_gemv_configs
from kernels.awq_gemm import AwqGemvConfig
from kernels.fp8_gemv import default_config

LLAMA_8B = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]
CPU = torch.device("cpu")


@pytest.mark.parametrize(("n", "k"), LLAMA_8B)
def test_fp8_candidates_bounded_valid_default_first(n: int, k: int) -> None:
    cands = fp8_candidates(n, k, CPU)
    assert cands[0] == default_config(n, k, CPU)
    assert len(cands) == len(set(cands)) <= MAX_CONFIGS
    assert any(c.use_dot for c in cands), "the tensor-core variant is always tried"
    for c in cands:
        assert c.block_n & (c.block_n - 1) == 0 and c.block_k & (c.block_k - 1) == 0, c
        assert c.block_k * c.split_k <= k, f"{c}: a split shorter than one K-chunk"
        if c.use_dot:
            assert c.block_n >= 16 and c.block_k >= 16, c


@pytest.mark.parametrize(("n", "k"), LLAMA_8B)
def test_awq_candidates_bounded_valid_default_first(n: int, k: int) -> None:
    cands = awq_candidates(n, k)
    assert cands[0] == AwqGemvConfig()
    assert len(cands) == len(set(cands)) <= MAX_CONFIGS
    for c in cands:
        assert c.block_n >= 8 and c.block_n & (c.block_n - 1) == 0, c
        assert 128 % c.block_k == 0, f"{c}: block_k must divide the group size"


def test_overlay_file_extends_the_table_and_a_broken_file_is_ignored(tmp_path, monkeypatch) -> None:
    env = quant_gemv_configs.FP8_TUNED_ENV
    monkeypatch.setitem(quant_gemv_configs.FP8_TUNED, "dev/1sm", {"8x16": {"block_n": 4}, "1x1": {"block_n": 2}})
    path = tmp_path / "fp8.json"
    path.write_text(json.dumps({"dev/1sm": {"8x16": {"block_n": 16}}, "other/2sm": {"1x1": {"block_n": 8}}}))
    monkeypatch.setenv(env, str(path))
    quant_gemv_configs._entries.cache_clear()
    try:
        assert quant_gemv_configs._entries(env, "dev/1sm") == {"8x16": {"block_n": 16}, "1x1": {"block_n": 2}}
        path.write_text("{ truncated")
        quant_gemv_configs._entries.cache_clear()
        assert quant_gemv_configs._entries(env, "dev/1sm") == {"8x16": {"block_n": 4}, "1x1": {"block_n": 2}}
        monkeypatch.setenv(env, str(tmp_path / "missing.json"))
        quant_gemv_configs._entries.cache_clear()
        assert quant_gemv_configs._entries(env, "dev/1sm")["8x16"] == {"block_n": 4}
        assert quant_gemv_configs.tuned_entry(env, CPU, 8, 16) is None, "the CPU never takes device tiles"
    finally:
        quant_gemv_configs._entries.cache_clear()
