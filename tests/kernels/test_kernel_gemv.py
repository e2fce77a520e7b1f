"""Fused batch-1 GEMV (`kernels.gemv`) vs the unfused torch expression it replaces (CPU: interpreter).

The reference is what the model computes without fusion: HF RMSNorm, then `F.linear`; or
`silu(gate) * up`, then `F.linear`, then `residual + y` in the model dtype.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from kernel_ref import rmsnorm_ref

from kernels.gemv import GemvConfig, fused_gemv

DTYPES = [torch.float32, torch.float16]
# (N, K, config): ragged N and K (masked tails) and tiles that divide evenly (unmasked fast path)
SHAPES = [
    (48, 96, GemvConfig(block_n=16, block_k=32, num_warps=4)),
    (37, 70, GemvConfig(block_n=8, block_k=32, num_warps=2)),
    (64, 256, GemvConfig(block_n=4, block_k=128, num_warps=4, num_stages=2)),
    # split-K: uneven slices (3 chunks in 2 slices, 5 in 3 with a ragged tail), even slices with
    # pipelining, and more slices asked than there are K-chunks (clamped to 2)
    (48, 96, GemvConfig(block_n=16, block_k=32, num_warps=4, split_k=2)),
    (37, 70, GemvConfig(block_n=8, block_k=16, num_warps=2, split_k=3)),
    (64, 256, GemvConfig(block_n=4, block_k=32, num_warps=4, num_stages=2, split_k=4)),
    (40, 64, GemvConfig(block_n=8, block_k=32, num_warps=4, split_k=8)),
]


def _tol(dtype: torch.dtype) -> dict[str, float]:
    # The kernel and torch sum K products in different orders; fp16 outputs differ by rounding steps.
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}


def _inputs(n: int, k: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(n, k, generator=gen) / k ** 0.5).to(dtype)
    x = torch.randn(1, k, generator=gen).to(dtype)
    return weight, x, gen


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "k", "config"), SHAPES)
def test_plain_with_bias(dtype: torch.dtype, n: int, k: int, config: GemvConfig) -> None:
    weight, x, gen = _inputs(n, k, dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    torch.testing.assert_close(fused_gemv(x, weight, bias=bias, config=config), F.linear(x, weight, bias),
                               **_tol(dtype))
    torch.testing.assert_close(fused_gemv(x, weight, config=config), F.linear(x, weight), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "k", "config"), SHAPES)
def test_rmsnorm_prologue(dtype: torch.dtype, n: int, k: int, config: GemvConfig) -> None:
    weight, x, gen = _inputs(n, k, dtype, seed=1)
    x = x * 3.0  # an un-normalised residual stream
    gamma = (1 + 0.2 * torch.randn(k, generator=gen)).to(dtype)
    expected = F.linear(rmsnorm_ref(x, gamma, 1e-5), weight)
    torch.testing.assert_close(fused_gemv(x, weight, norm_weight=gamma, eps=1e-5, config=config), expected,
                               **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "k", "config"), SHAPES)
def test_silu_mul_prologue_with_residual(dtype: torch.dtype, n: int, k: int, config: GemvConfig) -> None:
    weight, _, gen = _inputs(n, k, dtype, seed=2)
    gate_up = torch.randn(1, 2 * k, generator=gen).to(dtype)
    residual = torch.randn(1, n, generator=gen).to(dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    expected = residual + F.linear(F.silu(gate) * up, weight)
    got = fused_gemv(gate_up, weight, silu_mul=True, residual=residual, config=config)
    torch.testing.assert_close(got, expected, **_tol(dtype))
    # In place: `out` aliasing `residual` is allowed (each program owns its output slice).
    fused_gemv(gate_up, weight, silu_mul=True, residual=residual, out=residual, config=config)
    torch.testing.assert_close(residual, expected, **_tol(dtype))


def test_default_config_runs_and_rejects_bad_shapes() -> None:
    weight, x, _ = _inputs(40, 64, torch.float32)
    torch.testing.assert_close(fused_gemv(x, weight), F.linear(x, weight), atol=1e-4, rtol=1e-4)
    with pytest.raises(AssertionError, match="x: expected shape"):
        fused_gemv(torch.randn(2, 64), weight)  # batch 2 is not this kernel's job
    with pytest.raises(AssertionError, match="x: expected shape"):
        fused_gemv(x, weight, silu_mul=True)  # silu_mul wants [1, 2K]
    with pytest.raises(AssertionError, match="weight dtype"):
        fused_gemv(x, weight.half())


@pytest.mark.parametrize("prologue", ["none", "rmsnorm", "silu_mul"])
def test_split_k_matches_single_pass_and_leaves_counters_zero(prologue: str) -> None:
    """Split-K vs the one-program-per-row-block kernel on the same inputs (fp32: only the summation
    order differs), repeated launches bit-identical, and the arrival counters reset for the next launch."""
    from kernels.gemv import _split_k_counters

    n, k = 24, 200
    weight, x, gen = _inputs(n, k, torch.float32, seed=3)
    kw: dict = {"bias": torch.randn(n, generator=gen), "residual": torch.randn(1, n, generator=gen)}
    if prologue == "rmsnorm":
        kw.update(norm_weight=1 + 0.2 * torch.randn(k, generator=gen), eps=1e-5)
    elif prologue == "silu_mul":
        x = torch.randn(1, 2 * k, generator=gen)
        kw["silu_mul"] = True
    whole = fused_gemv(x, weight, config=GemvConfig(block_n=8, block_k=64, num_warps=4), **kw)
    split_cfg = GemvConfig(block_n=8, block_k=32, num_warps=4, split_k=3)
    first = fused_gemv(x, weight, config=split_cfg, **kw)
    torch.testing.assert_close(first, whole, atol=1e-5, rtol=1e-5)
    assert torch.equal(first, fused_gemv(x, weight, config=split_cfg, **kw))
    assert int(_split_k_counters(x.device).abs().sum()) == 0


def test_pick_config_uses_the_device_table(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from kernels import gemv_configs

    monkeypatch.setattr(gemv_configs, "TUNED", {"Fake GPU/7sm": {"96x64": {
        "block_n": 16, "block_k": 32, "num_warps": 4, "num_stages": 2, "split_k": 2}}})
    gemv_configs._tuned.cache_clear()
    try:
        assert gemv_configs._tuned("Fake GPU/7sm", 96, 64) == GemvConfig(16, 32, 4, 2, 2)
        assert gemv_configs._tuned("Fake GPU/7sm", 96, 128) is None  # other shapes: default
        assert gemv_configs._tuned("Other GPU/7sm", 96, 64) is None
        # A sweep's output file overlays the table (device sessions measure the engine with it).
        sweep_out = tmp_path / "gemv_tuned.json"
        sweep_out.write_text(json.dumps({"Other GPU/7sm": {"96x64": {"block_n": 4, "block_k": 64, "num_warps": 2}}}))
        monkeypatch.setenv(gemv_configs.TUNED_ENV, str(sweep_out))
        gemv_configs._tuned.cache_clear()
        assert gemv_configs._tuned("Other GPU/7sm", 96, 64) == GemvConfig(4, 64, 2)
        assert gemv_configs._tuned("Fake GPU/7sm", 96, 64) == GemvConfig(16, 32, 4, 2, 2)
        # CPU tensors (the interpreter) always take the defaults.
        assert gemv_configs.pick_config(torch.device("cpu"), 96, 64) == gemv_configs.default_config(64)
    finally:
        gemv_configs._tuned.cache_clear()


def test_bad_tiles_are_rejected() -> None:
    weight, x, _ = _inputs(40, 64, torch.float32)
    with pytest.raises(AssertionError, match="power of 2"):
        fused_gemv(x, weight, config=GemvConfig(block_n=6, block_k=32, num_warps=4))
    with pytest.raises(AssertionError, match="split_k"):
        fused_gemv(x, weight, config=GemvConfig(block_n=8, block_k=32, num_warps=4, split_k=0))
