"""FP8 kernels vs torch references.

CPU (Triton interpreter): the weight quantization helpers, the W8A16 reference, and the FP8 GEMV on
small ragged shapes (the interpreter upcasts fp8 exactly). The interpreter's fp32 -> fp8 rounding is
wrong on carries into the exponent (127.3 -> 64), so the per-token quantization kernel is only
checked on the device.

GPU (`-m gpu`): per-token quantization, the `_scaled_mm` W8A8 GEMM (Llama-3.1-8B projection shapes,
M = 1..512) and the FP8 GEMV (same shapes, with and without split-K).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels.fp8_gemm import fp8_linear_ref, fp8_linear_scaled_mm, fp8_w8a8_ref
from kernels.fp8_gemv import Fp8GemvConfig, default_config, fp8_gemv
from kernels.fp8_quant import (
    FP8_DTYPE,
    FP8_MAX,
    dequantize,
    per_token_quant_fp8,
    per_token_quant_fp8_ref,
    quantize_weight_per_channel,
    quantize_weight_per_tensor,
)

E4M3_REL_STEP = 2.0 ** -3  # 3 mantissa bits: neighbouring e4m3 values differ by at most 1/8 relative


def _weight(n: int, k: int, seed: int, device: str = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, k, generator=gen) / k ** 0.5).to(device)


# --------------------------------------------------------------------------------------- CPU
@pytest.mark.parametrize("per_channel", [False, True])
def test_weight_quantization_round_trip(per_channel: bool) -> None:
    w = _weight(64, 96, seed=0)
    w[3] *= 1e4  # one loud row: per-channel keeps the quiet rows' precision, per-tensor cannot
    q, scale = quantize_weight_per_channel(w) if per_channel else quantize_weight_per_tensor(w)
    assert q.dtype == FP8_DTYPE
    assert scale.shape == ((64,) if per_channel else ())
    # Every row (channel) or the whole tensor uses the full range: its amax maps onto 448.
    amax = q.float().abs().amax(dim=1) if per_channel else q.float().abs().amax()
    assert torch.all(amax == FP8_MAX)
    back = dequantize(q, scale)
    err = (back - w).abs()
    # Round to nearest: at most half a step of the element's own binade (plus subnormal floor).
    bound = 0.5 * E4M3_REL_STEP * w.abs() + scale.reshape(-1, 1) * 2.0 ** -9 if per_channel else \
        0.5 * E4M3_REL_STEP * w.abs() + scale * 2.0 ** -9
    assert torch.all(err <= bound + 1e-12)
    # The quiet rows: per-channel scales keep their precision (~ e4m3's 3 %), a per-tensor scale
    # set by the loud row pushes them towards the subnormals.
    quiet = torch.arange(64) != 3
    rel_err = (err[quiet].norm() / w[quiet].norm()).item()
    assert (rel_err < 0.03) == per_channel, rel_err


def test_per_token_reference_scales_each_row() -> None:
    # The quiet row stays above the scale floor (amax > 448 * MIN_SCALE = 1/512): at 1e-3 an unseeded draw
    # fell below it about one run in eight and the row's scale was the floor, not its own.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 40, generator=gen) * torch.tensor([1e-2, 1.0, 10.0, 100.0, 0.0, 1.0])[:, None]
    q, scale = per_token_quant_fp8_ref(x)
    assert scale.shape == (6, 1) and scale.dtype == torch.float32
    assert torch.all(torch.isfinite(q.float())) and torch.all(q[4].float() == 0)  # zero row: no 0/0
    for row in (0, 1, 2, 3, 5):
        assert q[row].float().abs().max() == FP8_MAX
    torch.testing.assert_close(dequantize(q, scale), x, rtol=E4M3_REL_STEP / 2, atol=1e-6)


def test_w8a8_reference_close_to_unquantized() -> None:
    w = _weight(48, 64, seed=1)
    x = torch.randn(5, 64)
    q, s = quantize_weight_per_channel(w)
    exact = F.linear(x, w)
    rel = (fp8_w8a8_ref(x, q, s) - exact).norm() / exact.norm()
    assert rel < 0.06, rel  # two ~2-3 % e4m3 roundings per product, averaged over K
    rel16 = (fp8_linear_ref(x, q, s) - exact).norm() / exact.norm()
    assert rel16 < rel  # weight-only is the more accurate of the two


@pytest.mark.parametrize(("n", "k", "config"), [
    (48, 96, Fp8GemvConfig(block_n=16, block_k=32, num_warps=4)),
    (37, 70, Fp8GemvConfig(block_n=8, block_k=32, num_warps=2)),
    (64, 256, Fp8GemvConfig(block_n=4, block_k=32, num_warps=4, num_stages=2, split_k=3)),
    (37, 300, Fp8GemvConfig(block_n=8, block_k=32, num_warps=2, split_k=4)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fp8_gemv_matches_reference_interpreter(n: int, k: int, config: Fp8GemvConfig, dtype: torch.dtype) -> None:
    q, s = quantize_weight_per_channel(_weight(n, k, seed=2))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, k, generator=gen).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    expected = (x.float() @ dequantize(q, s).t() + bias.float()).to(dtype)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-3, "rtol": 2e-3}
    torch.testing.assert_close(fp8_gemv(x, q, s, bias, config=config), expected, **tol)
    torch.testing.assert_close(fp8_gemv(x, q, s, config=config), (x.float() @ dequantize(q, s).t()).to(dtype), **tol)


@pytest.mark.parametrize("lean", [0, 1])
def test_fp8_gemv_decodes_every_e4m3_code_interpreter(lean: int) -> None:
    """Every finite e4m3 byte (zeros, subnormals, both signs, 448) decodes to its value: one weight row per
    code against a one-hot x, in fp32, so each output is exactly that weight's value."""
    codes = torch.tensor([c for c in range(256) if c not in (0x7F, 0xFF)], dtype=torch.uint8)
    n, k = codes.numel(), 8
    q = torch.zeros(n, k, dtype=torch.uint8)
    q[:, 5] = codes
    q = q.view(torch.float8_e4m3fn)
    x = torch.zeros(1, k)
    x[0, 5] = 1.0
    got = fp8_gemv(x, q, torch.ones(n), config=Fp8GemvConfig(block_n=16, block_k=8, num_warps=1, lean=lean))
    torch.testing.assert_close(got[0], q[:, 5].float(), atol=0, rtol=0)


@pytest.mark.parametrize(("n", "k", "config"), [
    (48, 96, Fp8GemvConfig(block_n=16, block_k=32, num_warps=4, use_dot=1)),
    (37, 300, Fp8GemvConfig(block_n=16, block_k=64, num_warps=4, num_stages=2, split_k=2, use_dot=1)),
])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fp8_gemv_tensor_core_variant_matches_reference_interpreter(n: int, k: int, config: Fp8GemvConfig,
                                                                    dtype: torch.dtype) -> None:
    """`use_dot`: x through fp16 (scaled by 2^-8) into an mma with the fp16 weights; large x must not
    overflow fp16 and ragged N / K must be masked."""
    q, s = quantize_weight_per_channel(_weight(n, k, seed=8))
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1, k, generator=gen)
    x[0, 3] = 6e4  # an outlier near fp16's limit: the 2^-8 scaling keeps it (and bf16's larger ones) finite
    x = x.to(dtype)
    expected = (x.float() @ dequantize(q, s).t()).to(dtype)
    torch.testing.assert_close(fp8_gemv(x, q, s, config=config), expected, atol=2e-2, rtol=1e-2)
    gamma = (1 + 0.2 * torch.randn(k, generator=gen)).to(dtype)
    plain = fp8_gemv(x, q, s, norm_weight=gamma, eps=1e-5, config=config._replace(use_dot=0))
    torch.testing.assert_close(fp8_gemv(x, q, s, norm_weight=gamma, eps=1e-5, config=config), plain,
                               atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("split_k", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fp8_gemv_prologues_match_unfused_interpreter(split_k: int, dtype: torch.dtype) -> None:
    """RMSNorm prologue, and SiLU-and-mul prologue with the residual epilogue (in place too): the same
    expressions the unfused model computes, with the dequantized weight."""
    from kernel_ref import rmsnorm_ref

    n, k = 40, 96
    cfg = Fp8GemvConfig(block_n=8, block_k=32, num_warps=2, split_k=split_k)
    q, s = quantize_weight_per_channel(_weight(n, k, seed=5))
    w = dequantize(q, s)
    gen = torch.Generator().manual_seed(6)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}

    x = (3 * torch.randn(1, k, generator=gen)).to(dtype)
    gamma = (1 + 0.2 * torch.randn(k, generator=gen)).to(dtype)
    expected = (rmsnorm_ref(x, gamma, 1e-5).float() @ w.t()).to(dtype)
    torch.testing.assert_close(fp8_gemv(x, q, s, norm_weight=gamma, eps=1e-5, config=cfg), expected, **tol)

    gate_up = torch.randn(1, 2 * k, generator=gen).to(dtype)
    residual = torch.randn(1, n, generator=gen).to(dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    act = (F.silu(gate.float()).to(dtype).float() * up.float()).to(dtype)
    expected = (residual.float() + (act.float() @ w.t()).to(dtype).float()).to(dtype)
    torch.testing.assert_close(fp8_gemv(gate_up, q, s, silu_mul=True, residual=residual, config=cfg), expected, **tol)
    fp8_gemv(gate_up, q, s, silu_mul=True, residual=residual, out=residual, config=cfg)
    torch.testing.assert_close(residual, expected, **tol)


# The lean loop (`Fp8GemvConfig.lean` = chunks per iteration). block_k = 256 x num_warps is its barrier-free
# tile on a GPU; the interpreter ignores num_warps, so small warps keep the chunks small. Ragged N and K (masked
# loads), whole tiles with an iteration's later chunks past the split's end (predicated off), split-K.
LEAN_CASES = [
    (48, 512, Fp8GemvConfig(block_n=16, block_k=256, num_warps=1, lean=1)),
    (40, 768, Fp8GemvConfig(block_n=8, block_k=256, num_warps=1, lean=2)),  # 3 chunks: the 4th is predicated off
    (37, 300, Fp8GemvConfig(block_n=8, block_k=256, num_warps=1, lean=2)),
    (64, 1280, Fp8GemvConfig(block_n=4, block_k=256, num_warps=1, lean=4, split_k=2)),
    (37, 1100, Fp8GemvConfig(block_n=16, block_k=512, num_warps=2, lean=3, split_k=3)),
    (24, 8, Fp8GemvConfig(block_n=8, block_k=8, num_warps=1, lean=2)),
]


@pytest.mark.parametrize(("n", "k", "config"), LEAN_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp8_gemv_lean_matches_reference_interpreter(n: int, k: int, config: Fp8GemvConfig,
                                                     dtype: torch.dtype) -> None:
    """`lean`: every prologue (none + bias + residual, RMSNorm, SiLU-and-mul + residual in place) against the
    unfused expressions with the dequantized weight, and against the plain loop of the same tile: both sum fp32
    products of the same rounded x in fp32 (in different orders), so their 16-bit outputs differ by at most
    about one rounding step."""
    from kernel_ref import rmsnorm_ref

    q, s = quantize_weight_per_channel(_weight(n, k, seed=10))
    w = dequantize(q, s)
    plain = config._replace(lean=0)
    gen = torch.Generator().manual_seed(11)
    tol = {"atol": 3e-2, "rtol": 1e-2}  # y is ~N(0, 1): one bf16 step of |y| < 4 is 2^-6, kept through + residual
    step = {"atol": 1e-3, "rtol": 2.0 ** -7}

    x = torch.randn(1, k, generator=gen).to(dtype)
    bias = torch.randn(n, generator=gen).to(dtype)
    residual = torch.randn(1, n, generator=gen).to(dtype)
    expected = (residual.float() + ((x.float() @ w.t()) + bias.float()).to(dtype).float()).to(dtype)
    torch.testing.assert_close(fp8_gemv(x, q, s, bias, residual=residual, config=config), expected, **tol)
    torch.testing.assert_close(fp8_gemv(x, q, s, bias, config=config), fp8_gemv(x, q, s, bias, config=plain), **step)

    x = (3 * torch.randn(1, k, generator=gen)).to(dtype)
    gamma = (1 + 0.2 * torch.randn(k, generator=gen)).to(dtype)
    got = fp8_gemv(x, q, s, norm_weight=gamma, eps=1e-5, config=config)
    torch.testing.assert_close(got, (rmsnorm_ref(x, gamma, 1e-5).float() @ w.t()).to(dtype), **tol)
    torch.testing.assert_close(got, fp8_gemv(x, q, s, norm_weight=gamma, eps=1e-5, config=plain), **step)

    gate_up = torch.randn(1, 2 * k, generator=gen).to(dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    act = (F.silu(gate.float()).to(dtype).float() * up.float()).to(dtype)
    torch.testing.assert_close(fp8_gemv(gate_up, q, s, silu_mul=True, config=config),
                               fp8_gemv(gate_up, q, s, silu_mul=True, config=plain), **step)
    expected = (residual.float() + (act.float() @ w.t()).to(dtype).float()).to(dtype)
    got = fp8_gemv(gate_up, q, s, silu_mul=True, residual=residual, config=config)
    torch.testing.assert_close(got, expected, **tol)
    fp8_gemv(gate_up, q, s, silu_mul=True, residual=residual, out=residual, config=config)
    torch.testing.assert_close(residual, got, atol=0, rtol=0)


@pytest.mark.parametrize(("n", "k", "config"), LEAN_CASES[:4])
@pytest.mark.parametrize("slots", [1, 2])
def test_fp8_gemv_ring_matches_lean_interpreter(n: int, k: int, config: Fp8GemvConfig, slots: int) -> None:
    """`ring` (kernels/fp8_gemv_ring.py): weights as int32 words, x as int64 words, the next chunk requested before
    this one's math. Every prologue against the lean loop of the same tile (same products, fp32 sums in another
    order) and against the unfused expressions; bf16 (the words' unpacking must keep bf16 bits)."""
    from kernel_ref import rmsnorm_ref

    dtype = torch.bfloat16
    q, s = quantize_weight_per_channel(_weight(n, k, seed=13))
    w = dequantize(q, s)
    ring = config._replace(ring=slots, lean=0)
    lean = config._replace(lean=max(config.lean, 1))
    gen = torch.Generator().manual_seed(14)
    tol = {"atol": 3e-2, "rtol": 1e-2}
    step = {"atol": 1e-3, "rtol": 2.0 ** -7}
    x = torch.randn(1, k, generator=gen).to(dtype)
    residual = torch.randn(1, n, generator=gen).to(dtype)
    got = fp8_gemv(x, q, s, residual=residual, config=ring)
    torch.testing.assert_close(got, (residual.float() + (x.float() @ w.t()).to(dtype).float()).to(dtype), **tol)
    torch.testing.assert_close(got, fp8_gemv(x, q, s, residual=residual, config=lean), **step)
    gamma = (1 + 0.2 * torch.randn(k, generator=gen)).to(dtype)
    got = fp8_gemv(x, q, s, norm_weight=gamma, eps=1e-5, config=ring)
    torch.testing.assert_close(got, (rmsnorm_ref(x, gamma, 1e-5).float() @ w.t()).to(dtype), **tol)
    torch.testing.assert_close(got, fp8_gemv(x, q, s, norm_weight=gamma, eps=1e-5, config=lean), **step)
    gate_up = torch.randn(1, 2 * k, generator=gen).to(dtype)
    torch.testing.assert_close(fp8_gemv(gate_up, q, s, silu_mul=True, config=ring),
                               fp8_gemv(gate_up, q, s, silu_mul=True, config=lean), **step)
    # fp32 x has no word path: the config's own loop runs (here the lean one), bit-identical to it.
    x32 = x.float()
    torch.testing.assert_close(fp8_gemv(x32, q, s, config=ring._replace(lean=1)), fp8_gemv(x32, q, s, config=lean),
                               atol=0, rtol=0)


def test_fp8_gemv_lean_fp32_products_exact_interpreter() -> None:
    """fp32 x with small-integer weights and x: every product and partial sum is an exact fp32 integer, so the
    lean loop (another summation order) must match the plain loop and the integer reference bit for bit."""
    n, k = 24, 1536
    gen = torch.Generator().manual_seed(12)
    q = torch.randint(-8, 9, (n, k), generator=gen).float().to(FP8_DTYPE)
    x = torch.randint(-4, 5, (1, k), generator=gen).float()
    s = torch.ones(n)
    cfg = Fp8GemvConfig(block_n=8, block_k=256, num_warps=1, lean=2)
    got = fp8_gemv(x, q, s, config=cfg)
    torch.testing.assert_close(got, x @ q.float().t(), atol=0, rtol=0)
    torch.testing.assert_close(got, fp8_gemv(x, q, s, config=cfg._replace(lean=0)), atol=0, rtol=0)


def test_fp8_gemv_rejects_bad_inputs() -> None:
    q, s = quantize_weight_per_channel(_weight(16, 32, seed=4))
    with pytest.raises(AssertionError, match="x: expected shape"):
        fp8_gemv(torch.randn(2, 32), q, s)
    with pytest.raises(AssertionError, match="float8_e4m3fn"):
        fp8_gemv(torch.randn(1, 32), q.float(), s)
    with pytest.raises(AssertionError, match="weight_scale"):
        fp8_gemv(torch.randn(1, 32), q, s[:1])


# --------------------------------------------------------------------------------------- GPU
LLAMA8B_SHAPES = [(4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336)]  # (N, K): o, qkv, gate_up, down
BATCHES = [1, 3, 16, 33, 128, 512]


def _close_fraction(got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Elements that differ by more than one e4m3 step (relative) or a tiny absolute floor."""
    diff = (got.float() - ref.float()).abs()
    # The floor is one subnormal step (2^-9): there the relative step is coarser than E4M3_REL_STEP.
    return diff > E4M3_REL_STEP * torch.maximum(got.float().abs(), ref.float().abs()) + 2.0 ** -9


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 7, 512, 4096])
@pytest.mark.parametrize("k", [4096, 14336, 100])
def test_per_token_quant_kernel_gpu(m: int, k: int) -> None:
    x = (torch.randn(m, k, device="cuda") * torch.logspace(-3, 2, m, device="cuda")[:, None]).bfloat16()
    x[0] = 0  # an all-zero row
    q, scale = per_token_quant_fp8(x, pad_rows_to=16)
    q_ref, scale_ref = per_token_quant_fp8_ref(x)
    assert q.shape[0] % 16 == 0 and q.shape[0] >= m
    torch.testing.assert_close(scale[:m], scale_ref, rtol=1e-6, atol=0)
    # The kernel's fp32 division may round one ulp differently from torch's: the fp8 result then
    # lands on the neighbouring value; allow that, rarely.
    off = _close_fraction(q[:m], q_ref)
    assert not off.any(), int(off.sum())
    assert (q[:m].float() != q_ref.float()).float().mean() < 1e-3
    assert torch.all(q[m:].float() == 0) and torch.all(scale[m:] == 1)


def _quantized_weight(n: int, k: int, per_channel: bool):
    w = _weight(n, k, seed=n + k, device="cuda")
    q, s = quantize_weight_per_channel(w) if per_channel else quantize_weight_per_tensor(w)
    return w, q, (s if per_channel else s.expand(n)).contiguous().float()


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), LLAMA8B_SHAPES)
@pytest.mark.parametrize("m", BATCHES)
def test_scaled_mm_gemm_gpu(n: int, k: int, m: int) -> None:
    w, q, s = _quantized_weight(n, k, per_channel=m % 2 == 1)
    x = torch.randn(m, k, device="cuda").bfloat16()
    bias = torch.randn(n, device="cuda").bfloat16()
    got = fp8_linear_scaled_mm(x, q, s, bias)
    assert got.shape == (m, n) and got.dtype == torch.bfloat16
    # Same quantized operands, exact fp32 products: only bf16 output rounding and summation order differ.
    q_x, x_scale = per_token_quant_fp8(x)
    ref = (q_x.float() @ q.float().t()) * x_scale * s[None, :] + bias.float()
    torch.testing.assert_close(got.float(), ref, rtol=1.6e-2, atol=1e-2 * ref.abs().mean().item())
    # And against the unquantized product: FP8 error, not a wiring error.
    exact = x.float() @ w.t() + bias.float()
    assert (got.float() - exact).norm() / exact.norm() < 0.06


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 5, 64])
def test_scaled_mm_static_input_scale_gpu(m: int) -> None:
    n, k = 4096, 4096
    _, q, s = _quantized_weight(n, k, per_channel=True)
    x = torch.randn(m, k, device="cuda").bfloat16()
    input_scale = (x.float().abs().amax() / FP8_MAX).reshape(())
    got = fp8_linear_scaled_mm(x, q, s, input_scale=input_scale)
    ref = fp8_w8a8_ref(x.float(), q, s, input_scale=input_scale)
    torch.testing.assert_close(got.float(), ref, rtol=1.6e-2, atol=1e-2 * ref.abs().mean().item())


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), LLAMA8B_SHAPES + [(1024, 4096), (128256, 4096)])
@pytest.mark.parametrize("split_k", [None, 1, 4])
def test_fp8_gemv_gpu(n: int, k: int, split_k: int | None) -> None:
    _, q, s = _quantized_weight(n, k, per_channel=True)
    x = torch.randn(1, k, device="cuda").bfloat16()
    bias = torch.randn(n, device="cuda").bfloat16()
    cfg = None if split_k is None else default_config(n, k, x.device)._replace(split_k=split_k)
    got = fp8_gemv(x, q, s, bias, config=cfg)
    ref = x.float() @ dequantize(q, s).t() + bias.float()
    torch.testing.assert_close(got.float(), ref[0:1], rtol=1.6e-2, atol=1e-2 * ref.abs().mean().item())


@pytest.mark.gpu
@pytest.mark.parametrize(("n", "k"), LLAMA8B_SHAPES)
@pytest.mark.parametrize("split_k", [None, 4, "lean", "lean-split", "ring1", "ring2"])
def test_fp8_gemv_prologues_gpu(n: int, k: int, split_k: int | str | None) -> None:
    from kernel_ref import rmsnorm_ref

    _, q, s = _quantized_weight(n, k, per_channel=True)
    w = dequantize(q, s)
    if isinstance(split_k, str) and split_k.startswith("ring"):  # the ring loop, 1 or 2 register slots
        cfg = Fp8GemvConfig(block_n=8, block_k=1024, num_warps=4, ring=int(split_k[-1]))
    elif isinstance(split_k, str):  # the lean loop's barrier-free tile (block_k = 256 x num_warps), 2 chunks / iteration
        cfg = Fp8GemvConfig(block_n=16, block_k=1024, num_warps=4, split_k=2 if split_k == "lean-split" else 1, lean=2)
    else:
        cfg = None if split_k is None else default_config(n, k, torch.device("cuda"))._replace(split_k=split_k)
    x = (3 * torch.randn(1, k, device="cuda")).bfloat16()
    gamma = (1 + 0.2 * torch.randn(k, device="cuda")).bfloat16()
    ref = rmsnorm_ref(x, gamma, 1e-5).float() @ w.t()
    got = fp8_gemv(x, q, s, norm_weight=gamma, eps=1e-5, config=cfg)
    torch.testing.assert_close(got.float(), ref, rtol=1.6e-2, atol=1e-2 * ref.abs().mean().item())
    gate_up = torch.randn(1, 2 * k, device="cuda").bfloat16()
    residual = torch.randn(1, n, device="cuda").bfloat16()
    gate, up = gate_up.chunk(2, dim=-1)
    ref = residual.float() + (F.silu(gate) * up).float() @ w.t()
    got = fp8_gemv(gate_up, q, s, silu_mul=True, residual=residual, config=cfg)
    torch.testing.assert_close(got.float(), ref, rtol=1.6e-2, atol=1e-2 * ref.abs().mean().item())


def test_pick_config_drops_fields_an_older_sweep_wrote(monkeypatch) -> None:
    """A TESSERA_FP8_GEMV_TUNED overlay from an older sweep may carry fields this version removed
    (`int_convert`): the tile still loads, without them."""
    import kernels.fp8_gemv as fp8_gemv_module

    entry = {"block_n": 8, "block_k": 1024, "num_warps": 4, "num_stages": 1, "split_k": 1, "lean": 3, "int_convert": 0}
    monkeypatch.setattr(fp8_gemv_module, "tuned_entry", lambda *args: entry)
    cfg = fp8_gemv_module.pick_config(4096, 14336, torch.device("cpu"))
    assert cfg == Fp8GemvConfig(block_n=8, block_k=1024, num_warps=4, num_stages=1, split_k=1, lean=3)
