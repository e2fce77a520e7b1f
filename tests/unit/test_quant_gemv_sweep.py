"""The quantized GEMV tile tables (kernels/quant_gemv_configs.py: tables + env overlay files) and the fast
sweep's candidate lists (bench/quant_gemv_sweep.py): bounded, launcher-valid, default first."""

from __future__ import annotations

import json

import pytest
import torch

from bench.quant_gemv_sweep import MAX_CONFIGS, awq_candidates, fp8_candidates
from kernels import quant_gemv_configs
from kernels.awq_gemv import AwqGemvConfig
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
    assert any(c.planes for c in cands), "the nibble-plane loop is always tried"
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


def test_sweep_logic_writes_overlays_the_kernels_accept(tmp_path, monkeypatch) -> None:
    """The sweep's bookkeeping on the CPU (interpreter kernels, fake timings): every kind writes an overlay
    whose entries the launchers accept, and the AWQ prefill comparison checks awq_gemm and picks a row count."""
    import os

    import bench.quant_gemv_sweep as sweep
    from kernels.awq_gemv import awq_gemv
    from kernels.fp8_gemv import Fp8GemvConfig, fp8_gemv

    # CPU-only machines run the kernels in Triton's interpreter (tests/conftest.py); with a GPU, on it.
    device = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    timings = (1e4 * 0.95 ** i for i in range(10_000))  # each call 5 % faster: a later (non-default) tile wins
    monkeypatch.setattr(sweep, "DEVICE", device)
    monkeypatch.setattr(sweep, "DTYPE", torch.float16)
    monkeypatch.setattr(sweep, "PREFILL_ROWS", (3, 20))
    monkeypatch.setattr(sweep, "L2_BYTES", 1)
    monkeypatch.setattr(sweep, "graph_of", lambda fns: [fn() for fn in fns] and fns)
    monkeypatch.setattr(sweep, "time_graph_us", lambda graph, per, launches: float(next(timings)))
    monkeypatch.setattr(sweep, "candidates", lambda kind, n, k: (
        sweep.fp8_candidates(n, k, CPU) if kind == "fp8" else sweep.awq_candidates(n, k))[:3])
    todo = [("o", 64, 256, "res"), ("down", 32, 256, "silu_res")]
    sweep.sweep_kind("fp8", todo, tmp_path / "fp8_gemv_tuned.json", "cpu/1sm", prefill=False)
    sweep.sweep_kind("awq", todo[:1], tmp_path / "awq_gemv_tuned.json", "cpu/1sm", prefill=True)
    fp8 = json.loads((tmp_path / "fp8_gemv_tuned.json").read_text())["cpu/1sm"]
    awq = json.loads((tmp_path / "awq_gemv_tuned.json").read_text())["cpu/1sm"]
    assert set(fp8) == {"64x256", "32x256"} and set(awq) == {"64x256"}
    assert fp8["64x256"] != default_config(64, 256, CPU)._asdict(), "the fake timings make a later tile win"
    from kernels.fp8_quant import quantize_weight_per_channel

    q, s = quantize_weight_per_channel(torch.randn(64, 256, device=device) * 0.05)
    fp8_gemv(torch.randn(1, 256, device=device).half(), q, s, config=Fp8GemvConfig(**fp8["64x256"]))
    packed = sweep.Case("awq", 64, 256, "", copies=1).weights[0]
    awq_gemv(torch.randn(1, 256, device=device).half(), *packed, 128, config=AwqGemvConfig(**awq["64x256"]))
    assert (tmp_path / "awq_gemv_sweep.json").exists()
