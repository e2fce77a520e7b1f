"""`Fp8GemvConfig.prewait`: a PDL launch of the lean FP8 GEMV requests only that many chunks of its first iteration
before waiting for the kernel before it, the rest right after. It moves loads, not math, so every case here is
bit-identical to the same tile loading all its first chunks before the wait.

CPU (Triton interpreter, which has no PDL): the launch is forced to PDL=True and the wait is a no-op, so the chunk
slots and masks of the split first iteration are checked. GPU (`-m gpu`): real programmatic launches with the
engine's prologues (o: residual, lean 4; qkv: RMSNorm, lean 2; down: SiLU-and-mul + residual, lean 3).
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl  # noqa: F401  (the interpreter looks `tl` up in _no_wait's module)

from kernels.fp8_gemv import Fp8GemvConfig, fp8_gemv
from kernels.fp8_quant import dequantize, quantize_weight_per_channel


@triton.jit
def _no_wait():
    pass


def _case(n: int, k: int, device: str):
    gen = torch.Generator().manual_seed(n + k)
    q, s = quantize_weight_per_channel((torch.randn(n, k, generator=gen) / k ** 0.5).to(device))
    x = torch.randn(1, 2 * k, generator=gen).to(device)
    residual = torch.randn(1, n, generator=gen).to(device)
    gamma = (1 + 0.2 * torch.randn(k, generator=gen)).to(device)
    return q, s.float().contiguous(), x, residual, gamma


def _prologues(x: torch.Tensor, k: int, gamma: torch.Tensor):
    """(x, fp8_gemv keyword arguments) per prologue the engine launches with PDL."""
    return [(x[:, :k], {}), (x[:, :k], {"norm_weight": gamma, "eps": 1e-5}), (x, {"silu_mul": True})]


@pytest.mark.parametrize(("n", "k", "lean", "prewait", "split_k"),
                         [(24, 3000, 3, 2, 1), (24, 3000, 3, 1, 1), (40, 2048, 2, 1, 1), (37, 4100, 4, 3, 2),
                          (16, 300, 4, 2, 1)])
def test_fp8_gemv_prewait_bit_identical_interpreter(monkeypatch, n: int, k: int, lean: int, prewait: int,
                                                    split_k: int) -> None:
    import kernels.fp8_gemv as fp8_gemv_module
    import kernels.fp8_gemv_lean as lean_module

    monkeypatch.setattr(fp8_gemv_module, "pdl_kernel_options", lambda device, wanted=None: {"PDL": True})
    monkeypatch.setattr(fp8_gemv_module, "wait_for_prior_kernel", _no_wait)
    monkeypatch.setattr(lean_module, "wait_for_prior_kernel", _no_wait)
    q, s, x, residual, gamma = _case(n, k, "cpu")
    cfg = Fp8GemvConfig(block_n=8, block_k=256, num_warps=1, lean=lean, split_k=split_k)
    for xin, kwargs in _prologues(x, k, gamma):
        want = fp8_gemv(xin, q, s, residual=residual.clone(), config=cfg, **kwargs)
        got = fp8_gemv(xin, q, s, residual=residual.clone(), config=cfg._replace(prewait=prewait), **kwargs)
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_fp8_gemv_prewait_must_leave_chunks_after_the_wait() -> None:
    q, s = torch.zeros(16, 512, dtype=torch.float8_e4m3fn), torch.ones(16)
    x = torch.randn(1, 512)
    with pytest.raises(AssertionError, match="prewait"):
        fp8_gemv(x, q, s, config=Fp8GemvConfig(block_n=16, block_k=256, num_warps=1, lean=2, prewait=2))


# (n, k, lean, split_k): o, qkv, down as the H100 tiles them, and ragged shapes (later chunks past the split's end)
GPU_TILES = [(4096, 4096, 4, 1), (6144, 4096, 2, 1), (4096, 14336, 3, 1), (40, 3000, 4, 1), (37, 4100, 4, 2)]


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k", "lean", "split_k", "prewait"),
                         [(*tile, prewait) for tile in GPU_TILES for prewait in range(1, tile[2])])
def test_fp8_gemv_prewait_bit_identical_gpu(n: int, k: int, lean: int, split_k: int, prewait: int) -> None:
    """Programmatic launches on the device; also within FP8 tolerance of the dequantized reference."""
    q, s, x, residual, gamma = _case(n, k, "cuda")
    x, residual, gamma = x.bfloat16(), residual.bfloat16(), gamma.bfloat16()
    cfg = Fp8GemvConfig(block_n=8, block_k=1024, num_warps=4, split_k=split_k, lean=lean)
    for xin, kwargs in _prologues(x, k, gamma):
        want = fp8_gemv(xin, q, s, residual=residual, config=cfg, programmatic=True, **kwargs)
        got = fp8_gemv(xin, q, s, residual=residual, config=cfg._replace(prewait=prewait), programmatic=True,
                       **kwargs)
        torch.testing.assert_close(got, want, atol=0, rtol=0)
    ref = residual.float() + x[:, :k].float() @ dequantize(q, s).t()
    got = fp8_gemv(x[:, :k], q, s, residual=residual, config=cfg._replace(prewait=prewait), programmatic=True)
    torch.testing.assert_close(got.float(), ref, rtol=1.6e-2, atol=1e-2 * ref.abs().mean().item())
