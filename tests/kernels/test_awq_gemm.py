"""AWQ W4A16 kernels (`kernels.awq_gemm`, `kernels.awq_gemv`) vs the torch reference `dequantize_awq` + matmul in fp32.

The packed tensors come from `engine.quant.awq_pack` (AutoAWQ's pack loop), so a wrong nibble order,
zero or group index in the kernels shows up here. CPU: the Triton interpreter on small shapes;
`-m gpu`: model shapes on CUDA in fp16 and bf16.
"""

from __future__ import annotations

import functools

import pytest
import torch

from engine.quant.awq import dequantize_awq, unpack_int4
from engine.quant.awq_pack import pack_int4, quantize_awq
from kernels.awq_gemm import AwqDequantConfig, AwqGemmConfig, awq_dequantize, awq_gemm
from kernels.awq_gemv import AwqGemvConfig, awq_gemv, gemv_locks


@functools.cache
def _packed_cpu(k: int, n: int, group: int, seed: int):
    weight = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) / k ** 0.5  # [out, in]
    return quantize_awq(weight, group)


def _packed(k: int, n: int, group: int, dtype: torch.dtype, device: str, seed: int = 0):
    p = _packed_cpu(k, n, group, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    return (p.qweight.to(device), p.qzeros.to(device), p.scales.to(dtype).to(device)), gen


def _reference(x: torch.Tensor, packed, group: int) -> torch.Tensor:
    w = dequantize_awq(packed[0], packed[1], packed[2].float(), group)  # [K, N] fp32
    return x.float() @ w


def _tol(dtype: torch.dtype, k: int) -> dict[str, float]:
    if dtype == torch.float32:
        return {"atol": 1e-4, "rtol": 1e-4}
    # 16-bit outputs (and, in the GEMM, 16-bit dequantised tiles): a few output ulps, more for long K.
    return {"atol": 2e-2 * max(1.0, (k / 4096) ** 0.5), "rtol": 2e-2}


def test_pack_roundtrip_and_awq_order() -> None:
    values = torch.arange(16, dtype=torch.int32).reshape(2, 8)  # row 0: 0..7, row 1: 8..15
    packed = pack_int4(values)
    # AutoAWQ order: nibble i holds column (0, 2, 4, 6, 1, 3, 5, 7)[i]; nibble 0 is the low bits.
    assert packed[0, 0].item() == 0x75316420
    assert packed[1, 0].item() == int(0xFDB9ECA8 - (1 << 32))  # top nibble >= 8: negative as int32
    assert torch.equal(unpack_int4(packed), values)
    # The reference dequantisation reproduces what the packer says the tensors mean.
    weight = torch.randn(16, 64)
    p = quantize_awq(weight, 32)
    torch.testing.assert_close(dequantize_awq(p.qweight, p.qzeros, p.scales.float(), 32).t(), p.dequantized)
    assert (p.dequantized - weight).abs().max() <= p.scales.float().max() * 0.51 + 1e-3  # round-to-nearest


CPU_SHAPES = [(64, 48, 32), (128, 64, 64)]  # (K, N, group)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("k", "n", "group"), CPU_SHAPES)
def test_gemv_interpreter(dtype: torch.dtype, k: int, n: int, group: int) -> None:
    packed, gen = _packed(k, n, group, dtype, "cpu")
    x = torch.randn(1, k, generator=gen).to(dtype)
    for cfg in (AwqGemvConfig(block_n=16, block_k=16, split_k=3, planes=0), AwqGemvConfig(block_n=64, block_k=32, planes=0),
                None,
                AwqGemvConfig(block_n=32, block_k=16, num_stages=2, split_k=2, use_gemm=1),
                AwqGemvConfig(block_n=16, block_k=16, split_k=3, planes=1), AwqGemvConfig(block_n=64, block_k=32, planes=1),
                # The lean group loop (prefetch depth 3 over 2 or 4 chunks per group; one chunk per group).
                AwqGemvConfig(block_n=16, block_k=16, split_k=3, lean=1), AwqGemvConfig(block_n=64, block_k=8, lean=1),
                AwqGemvConfig(block_n=32, block_k=32, split_k=2, lean=1)):
        locks = gemv_locks(n, x.device)
        got = awq_gemv(x, *packed, group, config=cfg, locks=locks)
        assert got.shape == (1, n) and got.dtype == dtype
        torch.testing.assert_close(got.float(), _reference(x, packed, group), **_tol(dtype, k))
        assert not locks.any(), "the split-K arrival counters must be left at zero for the next launch"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])  # bf16: the interpreter's bf16 math is off
@pytest.mark.parametrize(("k", "n", "group"), CPU_SHAPES)
@pytest.mark.parametrize("m", [3, 20])
def test_gemm_and_dequant_interpreter(dtype: torch.dtype, k: int, n: int, group: int, m: int) -> None:
    packed, gen = _packed(k, n, group, dtype, "cpu", seed=1)
    x = torch.randn(m, k, generator=gen).to(dtype)
    for split_k in (1, 3):
        locks = gemv_locks(n, x.device)
        cfg = AwqGemmConfig(block_m=16, block_n=32, block_k=16, num_warps=4, split_k=split_k)
        got = awq_gemm(x, *packed, group, config=cfg, locks=locks)
        assert got.shape == (m, n) and got.dtype == dtype
        torch.testing.assert_close(got.float(), _reference(x, packed, group), **_tol(dtype, k))
        assert not locks.any()
    torch.testing.assert_close(awq_gemm(x, *packed, group).float(), _reference(x, packed, group), **_tol(dtype, k))
    for cfg in (None, AwqDequantConfig(block_k=16, block_p=4, num_warps=4)):  # 4 packs: N=48 masks the last
        dense = awq_dequantize(*packed, group, config=cfg)
        torch.testing.assert_close(dense, dequantize_awq(*packed, group), atol=0, rtol=0)


def test_launchers_reject_bad_inputs() -> None:
    packed, _ = _packed(64, 16, 32, torch.float32, "cpu")
    with pytest.raises(AssertionError, match="x dtype"):
        awq_gemm(torch.randn(2, 64).half(), *packed, 32)
    with pytest.raises(AssertionError, match="one row"):
        awq_gemv(torch.randn(2, 64), *packed, 32)
    with pytest.raises(AssertionError, match="multiple of the group size"):
        awq_gemm(torch.randn(2, 64), *packed, 48)


# (K, N): Llama-3.1-8B's projections (qkv, o, gate_up, down) and a ragged N that masks the last tile.
GPU_SHAPES = [(4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096), (4096, 14336), (2048, 1000 - 1000 % 8)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n"), GPU_SHAPES)
@pytest.mark.parametrize("m", [1, 4, 64, 512])
def test_awq_kernels_gpu(dtype: torch.dtype, k: int, n: int, m: int) -> None:
    group = 128
    packed, gen = _packed(k, n, group, dtype, "cuda", seed=k + n)
    x = torch.randn(m, k, generator=gen).to(dtype).cuda()
    ref = _reference(x, packed, group)
    got = awq_gemv(x, *packed, group) if m == 1 else awq_gemm(x, *packed, group)
    torch.testing.assert_close(got.float(), ref, **_tol(dtype, k))
    if m == 1:
        locks = gemv_locks(n, x.device)
        for _ in range(3):
            assert torch.equal(got, awq_gemv(x, *packed, group, locks=locks)), "split-K must reduce in a fixed order"
        assert not locks.any()
        torch.testing.assert_close(awq_gemm(x, *packed, group).float(), ref, **_tol(dtype, k))
    if m == 512:  # the dequantize + cuBLAS path of large prefills
        torch.testing.assert_close((x @ awq_dequantize(*packed, group)).float(), ref, **_tol(dtype, k))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n"), GPU_SHAPES)
def test_awq_dequantize_gpu_exact(dtype: torch.dtype, k: int, n: int) -> None:
    """The dense matrix before cuBLAS has the torch reference's bits (integer q - z, one rounding of the product)
    for the default tiles and for tiles that mask packs (ragged N) or rows differently."""
    packed, _ = _packed(k, n, 128, dtype, "cuda", seed=k + 2 * n)
    ref = dequantize_awq(*packed, 128)
    for cfg in (None, AwqDequantConfig(block_k=16, block_p=64, num_warps=4),
                AwqDequantConfig(block_k=128, block_p=16, num_warps=8)):
        got = awq_dequantize(*packed, 128, config=cfg)
        assert got.dtype == dtype and torch.equal(got, ref), f"{cfg}: {(got.float() - ref.float()).abs().max()}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n"), GPU_SHAPES)
def test_awq_gemv_planes_gpu(dtype: torch.dtype, k: int, n: int) -> None:
    """The nibble-plane loop at model shapes on the device (its int4 -> fp32 trick and plane order), with and
    without split-K."""
    group = 128
    packed, gen = _packed(k, n, group, dtype, "cuda", seed=k + n + 7)
    x = torch.randn(1, k, generator=gen).to(dtype).cuda()
    ref = _reference(x, packed, group)
    for cfg in (AwqGemvConfig(block_n=256, block_k=16, planes=1), AwqGemvConfig(block_n=512, block_k=16, num_warps=8,
                                                                                 split_k=1, planes=1),
                AwqGemvConfig(block_n=128, block_k=32, split_k=8, planes=1),
                # The lean loop (its inline-asm lop3 runs only here, on the device).
                AwqGemvConfig(lean=1), AwqGemvConfig(block_n=256, block_k=16, lean=1),
                AwqGemvConfig(block_n=512, block_k=16, num_warps=8, split_k=1, lean=1),
                AwqGemvConfig(block_n=128, block_k=32, split_k=8, lean=1)):
        locks = gemv_locks(n, x.device)
        got = awq_gemv(x, *packed, group, config=cfg, locks=locks)
        torch.testing.assert_close(got.float(), ref, **_tol(dtype, k))
        assert torch.equal(got, awq_gemv(x, *packed, group, config=cfg, locks=locks)), "fixed-order split-K"
        assert not locks.any()


def _rmsnorm_ref(x: torch.Tensor, gamma: torch.Tensor, eps: float) -> torch.Tensor:
    # Rounded as the unfused ops round: normalised row in the model dtype, then times gamma.
    xf = x.float()
    normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return (normed.float() * gamma.float()).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("lean", [0, 1])
def test_gemv_fused_prologues_and_epilogue_interpreter(dtype: torch.dtype, split_k: int, lean: int) -> None:
    """The batch-1 fused decode path's AWQ GEMV: RMSNorm / SiLU-and-mul prologue, bias and residual epilogue,
    against the unfused composition (reference ops, then the dequantized matmul)."""
    cfg = AwqGemvConfig(block_n=32, block_k=16, split_k=split_k, planes=1, lean=lean)
    x, packed, group, residual, tol = check_fused_prologues_and_epilogue(cfg, dtype, n=64, seed=3)
    # A tile of the older loop or of the mma route is swapped for the nibble-plane default when a prologue or
    # epilogue is asked for.
    for older in (AwqGemvConfig(block_n=16, block_k=16, planes=0), AwqGemvConfig(block_n=32, block_k=16, use_gemm=1)):
        got = awq_gemv(x, *packed, group, config=older, residual=residual)
        torch.testing.assert_close(got.float(), (_reference(x, packed, group).to(dtype).float() + residual.float()),
                                   **tol)


def check_fused_prologues_and_epilogue(cfg: AwqGemvConfig, dtype: torch.dtype, n: int, seed: int):
    """awq_gemv with `cfg`: RMSNorm prologue + bias, SiLU-and-mul prologue + residual, the residual alone, against
    the reference ops followed by the dequantized matmul. Returns the inputs for further checks."""
    k, group = 128, 32
    packed, gen = _packed(k, n, group, dtype, "cpu", seed=seed)
    x = torch.randn(1, k, generator=gen).to(dtype)
    gamma = (1 + 0.1 * torch.randn(k, generator=gen)).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    residual = torch.randn(1, n, generator=gen).to(dtype)
    tol = _tol(dtype, k)

    got = awq_gemv(x, *packed, group, config=cfg, norm_weight=gamma, eps=1e-5, bias=bias)
    want = _reference(_rmsnorm_ref(x, gamma, 1e-5), packed, group) + bias.float()
    torch.testing.assert_close(got.float(), want, **tol)

    gate_up = torch.randn(1, 2 * k, generator=gen).to(dtype)
    act = (torch.nn.functional.silu(gate_up[:, :k].float()).to(dtype).float() * gate_up[:, k:].float()).to(dtype)
    got = awq_gemv(gate_up, *packed, group, config=cfg, silu_mul=True, residual=residual)
    want = (_reference(act, packed, group).to(dtype).float() + residual.float())
    torch.testing.assert_close(got.float(), want, **tol)

    got = awq_gemv(x, *packed, group, config=cfg, residual=residual)
    torch.testing.assert_close(got.float(), _reference(x, packed, group).to(dtype).float() + residual.float(), **tol)
    return x, packed, group, residual, tol


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "n"), [(4096, 6144), (14336, 4096)])
def test_awq_gemv_planes_lean_fused_gpu(dtype: torch.dtype, k: int, n: int) -> None:
    """The lean and pipelined loops' prologues on the device (inline-asm lop3 and L2 prefetch, unmasked x loads)
    against the plane loop twin: RMSNorm (qkv), SiLU-and-mul with a residual (down)."""
    group = 128
    packed, gen = _packed(k, n, group, dtype, "cuda", seed=k + n + 11)
    if k == 4096:
        x = torch.randn(1, k, generator=gen).to(dtype).cuda()
        kw = {"norm_weight": (1 + 0.1 * torch.randn(k, generator=gen)).to(dtype).cuda(), "eps": 1e-5}
    else:
        x = torch.randn(1, 2 * k, generator=gen).to(dtype).cuda()
        kw = {"silu_mul": True, "residual": torch.randn(1, n, generator=gen).to(dtype).cuda()}
    for lean_cfg, plane_cfg in ((AwqGemvConfig(lean=1), AwqGemvConfig()),
                                (AwqGemvConfig(block_n=256, split_k=4, lean=1), AwqGemvConfig(block_n=256, split_k=4))):
        got = awq_gemv(x, *packed, group, config=lean_cfg, **kw)
        want = awq_gemv(x, *packed, group, config=plane_cfg, **kw)
        torch.testing.assert_close(got.float(), want.float(), **_tol(dtype, k))

