"""The tensor-core batch-1 AWQ GEMV (`AwqGemvConfig(mma=1)`, `kernels.awq_mma`) vs the torch reference
(`dequantize_awq` + an fp32 matmul) and vs the nibble-plane loop.

CPU: the Triton interpreter runs the kernel's plain-integer dequant branch (ASM=0: the interpreter cannot run
inline asm); `-m gpu` runs the inline-asm branch (lop3 + f16x2 ops) at the Llama-3.1-8B shapes.
"""

from __future__ import annotations

import pytest
import torch
from test_awq_gemm import _packed, _reference, _tol, check_fused_prologues_and_epilogue

from kernels.awq_gemv import AwqGemvConfig, awq_gemv, gemv_locks

# (K, N, group): N ragged (a multiple of 8 that leaves the last column block partly masked), K a few groups.
CPU_SHAPES = [(64, 40, 32), (128, 72, 64), (256, 24, 128)]
CPU_CONFIGS = [AwqGemvConfig(block_n=16, block_k=16, split_k=1, mma=1),
               AwqGemvConfig(block_n=32, block_k=32, split_k=2, mma=1),
               AwqGemvConfig(block_n=64, block_k=16, split_k=3, mma=1),
               AwqGemvConfig(block_n=16, block_k=128, mma=1)]  # block_k past the group: clamped to the group


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n", "group"), CPU_SHAPES)
def test_awq_mma_interpreter(dtype: torch.dtype, k: int, n: int, group: int) -> None:
    packed, gen = _packed(k, n, group, dtype, "cpu", seed=5)
    x = torch.randn(1, k, generator=gen).to(dtype)
    ref = _reference(x, packed, group)
    for cfg in CPU_CONFIGS:
        locks = gemv_locks(n, x.device)
        got = awq_gemv(x, *packed, group, config=cfg, locks=locks)
        assert got.shape == (1, n) and got.dtype == dtype
        torch.testing.assert_close(got.float(), ref, **_tol(dtype, k))
        assert not locks.any(), "the split-K arrival counters must be left at zero for the next launch"
        if dtype == torch.float16:
            # fp16 x and integer weights (q - z) are exact in the mma; only the order of the fp32 sums differs
            # from the plane loop: the two agree to an output rounding.
            plane = awq_gemv(x, *packed, group, config=cfg._replace(mma=0, lean=1), locks=locks)
            torch.testing.assert_close(got.float(), plane.float(), atol=2e-3, rtol=2e-3)


def test_awq_mma_integer_inputs_exact() -> None:
    """Integer x (small) and integer weights: every product and sum is exact in fp32, so the mma loop, the
    plane loop and the reference agree to the bit (fp16 out)."""
    k, n, group = 128, 32, 32
    packed, gen = _packed(k, n, group, torch.float16, "cpu", seed=6)
    qw, qz, _ = packed
    scales = torch.ones(k // group, n, dtype=torch.float16)
    x = torch.randint(-3, 4, (1, k), generator=gen).to(torch.float16)
    for split_k in (1, 2):
        cfg = AwqGemvConfig(block_n=16, block_k=32, split_k=split_k, mma=1)
        got = awq_gemv(x, qw, qz, scales, group, config=cfg)
        want = _reference(x, (qw, qz, scales), group)
        assert torch.equal(got.float(), want), (got, want)
        assert torch.equal(got, awq_gemv(x, qw, qz, scales, group, config=cfg._replace(mma=0, lean=1)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("split_k", [1, 3])
def test_awq_mma_prologues_and_epilogue_interpreter(dtype: torch.dtype, split_k: int) -> None:
    """The fused decode path's prologues (RMSNorm, SiLU-and-mul) and bias / residual epilogue on the
    tensor-core loop, against the unfused composition (reference ops, then the dequantized matmul)."""
    check_fused_prologues_and_epilogue(AwqGemvConfig(block_n=16, block_k=16, split_k=split_k, mma=1), dtype, n=40,
                                       seed=7)


def test_awq_mma_fp32_x_and_bad_tiles() -> None:
    k, n, group = 64, 32, 32
    packed, gen = _packed(k, n, group, torch.float32, "cpu", seed=8)
    x = torch.randn(1, k, generator=gen)
    # fp32 x would round to fp16 on the tensor cores: it runs the plane loop instead (fp32-exact tolerance).
    got = awq_gemv(x, *packed, group, config=AwqGemvConfig(block_n=16, block_k=16, mma=1))
    torch.testing.assert_close(got, _reference(x, packed, group), **_tol(torch.float32, k))
    with pytest.raises(AssertionError, match="block_k >= 16"):
        awq_gemv(x.half(), packed[0], packed[1], packed[2].half(), group,
                 config=AwqGemvConfig(block_n=8, block_k=16, mma=1))


# (K, N): Llama-3.1-8B's projections (qkv, o, gate_up, down) and a ragged N that masks the last tile.
GPU_SHAPES = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096), (2048, 1000 - 1000 % 8)]
GPU_CONFIGS = [AwqGemvConfig(block_n=256, block_k=64, mma=1), AwqGemvConfig(block_n=256, block_k=32, mma=1),
               AwqGemvConfig(block_n=128, block_k=128, mma=1), AwqGemvConfig(block_n=128, block_k=64, mma=1),
               AwqGemvConfig(block_n=256, block_k=128, num_warps=8, mma=1),
               AwqGemvConfig(block_n=128, block_k=64, split_k=8, mma=1),
               AwqGemvConfig(block_n=64, block_k=32, split_k=1, mma=1)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n"), GPU_SHAPES)
def test_awq_mma_gpu(dtype: torch.dtype, k: int, n: int) -> None:
    """The inline-asm dequant (lop3 -> fp16 pairs, f16x2 zero removal) and the wgmma path at model shapes,
    against the reference and the lean plane loop; split-K reduces in a fixed order."""
    group = 128
    packed, gen = _packed(k, n, group, dtype, "cuda", seed=k + n + 13)
    x = torch.randn(1, k, generator=gen).to(dtype).cuda()
    ref = _reference(x, packed, group)
    lean = awq_gemv(x, *packed, group, config=AwqGemvConfig(lean=1))
    for cfg in GPU_CONFIGS:
        locks = gemv_locks(n, x.device)
        got = awq_gemv(x, *packed, group, config=cfg, locks=locks)
        torch.testing.assert_close(got.float(), ref, **_tol(dtype, k))
        torch.testing.assert_close(got.float(), lean.float(), **_tol(dtype, k))
        assert torch.equal(got, awq_gemv(x, *packed, group, config=cfg, locks=locks)), f"{cfg}: fixed-order split-K"
        assert not locks.any()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n"), [(4096, 6144), (4096, 4096), (14336, 4096)])
def test_awq_mma_fused_gpu(dtype: torch.dtype, k: int, n: int) -> None:
    """The engine's prologue / epilogue per shape on the device (qkv RMSNorm, o residual, down SiLU-mul +
    residual; bf16 x through fp16 scaled by 2^-8), against the plane loop twin."""
    group = 128
    packed, gen = _packed(k, n, group, dtype, "cuda", seed=k + n + 17)
    if n == 6144:
        x = torch.randn(1, k, generator=gen).to(dtype).cuda()
        kw = {"norm_weight": (1 + 0.1 * torch.randn(k, generator=gen)).to(dtype).cuda(), "eps": 1e-5}
    elif k == 4096:
        x = torch.randn(1, k, generator=gen).to(dtype).cuda()
        kw = {"residual": torch.randn(1, n, generator=gen).to(dtype).cuda()}
    else:
        x = (4 * torch.randn(1, 2 * k, generator=gen)).to(dtype).cuda()  # large activations (down's input)
        kw = {"silu_mul": True, "residual": torch.randn(1, n, generator=gen).to(dtype).cuda()}
    want = awq_gemv(x, *packed, group, config=AwqGemvConfig(lean=1), **kw)
    for cfg in GPU_CONFIGS[:3]:
        got = awq_gemv(x, *packed, group, config=cfg, **kw)
        torch.testing.assert_close(got.float(), want.float(), **_tol(dtype, k))
