"""The tensor-core AWQ GEMV (`kernels.awq_gemv_cuda`): its repacked layout against AutoAWQ's unpacked values
(CPU), its NVRTC build for sm_90 (CPU: NVRTC needs no GPU), and its output against the fp32 reference with
every prologue (GPU)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from engine.quant.awq import dequantize_awq, unpack_int4
from kernels import cuda_rtc
from kernels.awq_gemv_cuda import (
    LAYOUT_NIBBLES,
    MAGIC,
    AwqCudaConfig,
    awq_gemm_cuda,
    awq_gemv_cuda,
    repack_awq_for_cuda,
)
from kernels.cuda_rtc import CudaRtcError, compile_cubin


def _awq(k: int, n: int, dtype: torch.dtype, device: str = "cpu", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    qweight = torch.randint(-2**31, 2**31 - 1, (k, n // 8), dtype=torch.int32, generator=gen)
    qzeros = torch.randint(-2**31, 2**31 - 1, (k // 128, n // 8), dtype=torch.int32, generator=gen)
    scales = (torch.rand(k // 128, n, generator=gen) * 2e-3 + 1e-4).to(dtype)
    return qweight.to(device), qzeros.to(device), scales.to(device)


@pytest.mark.parametrize("rows_per_chunk", [16, 4096])
def test_repack_layout_matches_awq_values(rows_per_chunk: int) -> None:
    """Every nibble of the repacked words, read back by the layout's definition (word (tile j, group G, half h,
    lane, i): k step t = 4 h + i, nibble p at LAYOUT_NIBBLES[p] from row 16 j + lane // 4, column
    128 G + 16 t + 2 (lane % 4)), is AutoAWQ's q at that row and column; also when repacked in 16-row chunks."""
    k, n = 384, 48
    qweight, qzeros, scales = _awq(k, n, torch.bfloat16)
    packed = repack_awq_for_cuda(qweight, qzeros, scales, rows_per_chunk=rows_per_chunk)
    q = unpack_int4(qweight).t()  # [N, K]
    words = packed.qweight.view(n // 16, k // 128, 2, 32, 4)
    assert packed.qweight.shape == (n // 16 * k // 128 * 64, 4)
    checked = 0
    for j in range(n // 16):
        for G in range(k // 128):
            for lane in (0, 5, 18, 31):
                for t in range(8):
                    word = int(words[j, G, t // 4, lane, t % 4]) & 0xFFFFFFFF
                    for p, (dr, dk) in enumerate(LAYOUT_NIBBLES):
                        row, col = 16 * j + lane // 4 + dr, 128 * G + 16 * t + 2 * (lane % 4) + dk
                        assert (word >> (4 * p)) & 0xF == q[row, col], (j, G, lane, t, p)
                        checked += 1
    assert checked == (n // 16) * (k // 128) * 4 * 8 * 8


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_repack_scale_zero_bits(dtype: torch.dtype) -> None:
    """Low 16 bits: the scale; high 16 bits: MAGIC + zero in the same type (exact)."""
    qweight, qzeros, scales = _awq(256, 32, dtype, seed=1)
    sz = repack_awq_for_cuda(qweight, qzeros, scales).scale_zero
    low = (sz & 0xFFFF).to(torch.int16).view(dtype)
    high = ((sz >> 16) & 0xFFFF).to(torch.int16).view(dtype)
    assert torch.equal(low, scales)
    assert torch.equal(high.float(), unpack_int4(qzeros).float() + MAGIC[dtype])


ENGINE_VARIANTS = [(p, bias, res, bf16) for p in (0, 1, 2) for bias in (False, True) for res in (False, True)
                   for bf16 in (True, False)]


def test_kernel_builds_for_sm90_with_nvrtc() -> None:
    """Every prologue / epilogue / dtype instance compiles to an sm_90 cubin (NVRTC runs without a GPU)."""
    source = cuda_rtc.read_source("awq_gemv.cu")
    cfg = AwqCudaConfig()
    for prologue, bias, res, bf16 in ENGINE_VARIANTS[::3] + [ENGINE_VARIANTS[-1]]:
        expr = (f"awq_gemv_mma<{cfg.tiles}, {cfg.warps}, {cfg.depth}, {prologue}, {str(bias).lower()}, "
                f"{str(res).lower()}, {str(bf16).lower()}>")
        cubin, lowered = compile_cubin(source, expr, "sm_90")
        assert cubin[:4] == b"\x7fELF" and lowered.startswith("_Z12awq_gemv_mma"), expr
    # the split mma chains, with and without the early refill (kernels/awq_gemv_cuda.py CHAINS)
    for split in (1, 2, 4):
        for early in ("false", "true"):
            expr = f"awq_gemv_mma<2, 16, 2, 2, false, true, true, true, true, {split}, {early}>"
            assert compile_cubin(source, expr, "sm_90")[0][:4] == b"\x7fELF", expr
    for expr in ("awq_gemm_small<1, 8, 2, true>", "awq_gemm_small<2, 16, 4, false>", "awq_gemm_small<2, 8, 2, true, 2>",
                 "awq_gemm_small<1, 16, 2, false, 4>", "awq_gemm_small<1, 8, 2, true, 1, 2>",
                 "awq_gemm_small<2, 16, 2, false, 1, 4>"):
        assert compile_cubin(source, expr, "sm_90")[0][:4] == b"\x7fELF", expr
    # the programmatic-dependent-launch instances (griddepcontrol, sm_90 only; the second one lets the next launch
    # start as its programs start: the qkv GEMV before early-KV attention) and pre-Hopper builds without them
    for arch in ("sm_90", "sm_80"):
        for expr in ("awq_gemv_mma<2, 16, 2, 2, false, true, true, true>",
                     "awq_gemv_mma<2, 8, 2, 1, false, false, true, true, true>"):
            cubin, _ = compile_cubin(source, expr, arch)
            assert cubin[:4] == b"\x7fELF"


def test_compile_error_carries_the_log() -> None:
    with pytest.raises(CudaRtcError, match="(?s)could not compile.*undefined_thing"):
        compile_cubin("__global__ void k() { undefined_thing(); }", "k", "sm_90")


def _reference(x, mode, gamma, residual, awq, bias=None):
    if mode == "rms":
        rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
        x = ((x.float() * rstd).to(x.dtype).float() * gamma.float()).to(x.dtype)
    elif mode == "silu":
        gate, up = x.float().chunk(2, dim=-1)
        x = (F.silu(gate).to(x.dtype).float() * up).to(x.dtype)
    y = x.float() @ dequantize_awq(*awq, 128).float()
    if bias is not None:
        y = y + bias.float()
    if residual is not None:
        y = y.to(x.dtype).float() + residual.float()
    return y


def gemv_inputs(mode: str, n: int, k: int, dtype: torch.dtype):
    """(x, gamma, residual, bias, GEMV kwargs) on the GPU for `mode` plain / rms / silu (residual and bias on the
    last two, as the decode step's o / down get them), seeded."""
    torch.manual_seed(0)
    x = (torch.randn(1, 2 * k if mode == "silu" else k, device="cuda") * 2).to(dtype)
    gamma = (torch.rand(k, device="cuda") + 0.5).to(dtype)
    residual = torch.randn(1, n, device="cuda").to(dtype) if mode != "plain" else None
    bias = torch.randn(n, device="cuda").to(dtype) if mode == "silu" else None
    kw = {"residual": residual, "bias": bias}
    if mode == "rms":
        kw["norm_weight"] = gamma
    if mode == "silu":
        kw["silu_mul"] = True
    return x, gamma, residual, bias, kw


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["plain", "rms", "silu"])
@pytest.mark.parametrize("shape_cfg", [((4096, 6144), AwqCudaConfig()), ((384, 48), AwqCudaConfig(tiles=2)),
                                       ((1792, 4096), AwqCudaConfig(warps=4, depth=2)),
                                       ((4096, 6144), AwqCudaConfig(split=2, early_refill=True)),
                                       ((384, 48), AwqCudaConfig(tiles=2, split=2)),
                                       ((1792, 4096), AwqCudaConfig(warps=4, depth=2, split=4, early_refill=True))],
                         ids=["qkv-8b", "ragged", "down-like", "qkv-8b-split2e", "ragged-split2", "down-like-split4e"])
def test_awq_gemv_cuda_matches_reference_gpu(dtype, mode, shape_cfg) -> None:
    """Against x' @ dequant(W) in fp32 (x' rounded as the unfused prologue rounds): within a few 16-bit
    roundings of the output, also for a CTA past the last row (48 rows, 2 tiles per CTA) and warps with no
    group (3 groups, 8 warps); residual and bias on the RMSNorm / SiLU cases."""
    (k, n), cfg = shape_cfg
    awq = _awq(k, n, dtype, "cuda", seed=k + n)
    w = repack_awq_for_cuda(*awq)
    x, gamma, residual, bias, kw = gemv_inputs(mode, n, k, dtype)
    out = awq_gemv_cuda(x, w, cfg, **kw)
    ref = _reference(x, mode, gamma, residual, awq, bias)
    scale = ref.abs().max().item()
    # bf16: the output's own rounding is 2^-8 relative; the reference rounds the prologue the same way.
    tol = (2**-7 if dtype == torch.bfloat16 else 2**-9) * scale
    assert (out.float() - ref).abs().max().item() <= tol, (out.float() - ref).abs().max().item() / scale


def captured_on_side_stream(fn):
    """fn() captured in a CUDA graph on a side stream, as the engine captures: (the graph, fn's output)."""
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        out = fn()
    torch.cuda.current_stream().wait_stream(side)
    return graph, out


@pytest.mark.gpu
def test_awq_gemv_cuda_in_cuda_graph_gpu() -> None:
    """Launches on torch's current stream: a captured graph replays with new inputs."""
    awq = _awq(512, 64, torch.bfloat16, "cuda", seed=3)
    w = repack_awq_for_cuda(*awq)
    x = torch.zeros(1, 512, device="cuda", dtype=torch.bfloat16)
    awq_gemv_cuda(x, w)  # compile outside the capture
    graph, out = captured_on_side_stream(lambda: awq_gemv_cuda(x, w))
    x.copy_(torch.randn(1, 512, device="cuda").to(torch.bfloat16))
    graph.replay()
    torch.cuda.synchronize()
    ref = _reference(x, "plain", None, None, awq)
    assert (out.float() - ref).abs().max().item() <= 2**-7 * ref.abs().max().item()


def test_build_failure_falls_back_with_one_warning(monkeypatch, caplog) -> None:
    """A kernel that cannot be built or loaded on a device (no NVRTC, an unknown architecture) makes
    `supports` false at load, with one warning, instead of failing the first decode step."""
    from kernels import awq_gemv_cuda

    def refuse(*args, **kwargs):
        raise CudaRtcError("NVRTC could not compile awq_gemv_mma<...>:\nerror: unsupported gpu architecture")

    monkeypatch.setattr(cuda_rtc, "get_function", refuse)
    with caplog.at_level("WARNING", logger="kernels.cuda_rtc"):
        assert awq_gemv_cuda._builds_on.__wrapped__(0, torch.bfloat16) is False
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
    assert caplog.records[0].getMessage() == ("AWQ CUDA GEMV unavailable on cuda:0 (error: unsupported gpu "
                                              "architecture); using the Triton GEMV")


@pytest.mark.gpu
def test_awq_gemv_cuda_pdl_chain_gpu() -> None:
    """Programmatic dependent launch: each GEMV loads weights before waiting for the kernel that wrote its x. A
    chain where every launch reads the previous one's output (RMSNorm x -> up, SiLU-mul -> down + residual,
    4 rounds) gives the same bits with and without PDL, eager and replayed from a CUDA graph, and with every GEMV
    letting the next one start as its CTAs start (`trigger_dependents`, the engine's `EARLY_TRIGGER`): the next
    launch's CTAs then run beside this one's and still wait for all of it before reading x."""
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("PDL needs sm_90")
    k, inter = 1024, 2048
    up = repack_awq_for_cuda(*_awq(k, 2 * inter, torch.bfloat16, "cuda", seed=7))
    down = repack_awq_for_cuda(*_awq(inter, k, torch.bfloat16, "cuda", seed=8))
    gamma = (torch.rand(k, device="cuda") + 0.5).to(torch.bfloat16)
    x0 = torch.randn(1, k, device="cuda").to(torch.bfloat16)

    def chain(pdl: bool, early: bool = False) -> torch.Tensor:
        x = x0
        for _ in range(4):
            h = awq_gemv_cuda(x, up, AwqCudaConfig(pdl=pdl), norm_weight=gamma, trigger_dependents=early)
            x = awq_gemv_cuda(h, down, AwqCudaConfig(warps=16, tiles=2, pdl=pdl), silu_mul=True, residual=x,
                              trigger_dependents=early)
        return x

    plain = chain(False)
    assert torch.equal(chain(True), plain)
    assert torch.equal(chain(True, early=True), plain)
    for early in (False, True):
        chain(True, early)  # compiled; now capture
        graph, out = captured_on_side_stream(lambda early=early: chain(True, early))
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, plain), f"early trigger {early}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("rows", [2, 5, 8, 13, 16, 23, 32, 45])
@pytest.mark.parametrize("shape_cfg", [((4096, 6144), AwqCudaConfig()), ((384, 48), AwqCudaConfig(tiles=2)),
                                       ((1792, 4096), AwqCudaConfig(warps=16, tiles=2))],
                         ids=["qkv-8b", "ragged", "down-like"])
def test_awq_gemm_cuda_small_batch_gpu(dtype, rows, shape_cfg) -> None:
    """Small batches through `awq_gemm_cuda` (up to 4 groups of 8 rows per weight pass: 13 and 16 rows are two
    groups, 23 and 32 four, 45 rows two launches) against
    x @ dequant(W) in fp32, row by row, within the output's rounding; every row distinct, so a row read from
    the wrong B column fails."""
    (k, n), cfg = shape_cfg
    awq = _awq(k, n, dtype, "cuda", seed=rows + k)
    torch.manual_seed(rows)
    x = (torch.randn(rows, k, device="cuda") * 2).to(dtype)
    out = awq_gemm_cuda(x, repack_awq_for_cuda(*awq), cfg)
    ref = _reference(x, "plain", None, None, awq)
    tol = (2**-7 if dtype == torch.bfloat16 else 2**-9) * ref.abs().amax(dim=1, keepdim=True)
    assert out.shape == (rows, n) and bool(((out.float() - ref).abs() <= tol).all())


@pytest.mark.gpu
@pytest.mark.parametrize("split", [2, 4])
@pytest.mark.parametrize("rows", [2, 5, 8])
@pytest.mark.parametrize("shape_cfg", [((4096, 6144), AwqCudaConfig()), ((1792, 4096), AwqCudaConfig(warps=16, tiles=2))],
                         ids=["qkv-8b", "down-like"])
def test_awq_gemm_cuda_small_batch_split_chains_gpu(monkeypatch, split, rows, shape_cfg) -> None:
    """One column group (2-8 rows) with its mma and x-sum chains split (`SMALL_CHAINS`): the same reference."""
    from kernels import awq_gemv_cuda

    monkeypatch.setattr(awq_gemv_cuda, "SMALL_CHAINS", awq_gemv_cuda.parse_chains(str(split)))
    (k, n), cfg = shape_cfg
    awq = _awq(k, n, torch.bfloat16, "cuda", seed=rows + k)
    torch.manual_seed(rows)
    x = (torch.randn(rows, k, device="cuda") * 2).to(torch.bfloat16)
    out = awq_gemm_cuda(x, repack_awq_for_cuda(*awq), cfg)
    ref = _reference(x, "plain", None, None, awq)
    tol = 2**-7 * ref.abs().amax(dim=1, keepdim=True)
    assert out.shape == (rows, n) and bool(((out.float() - ref).abs() <= tol).all())


def test_small_batch_config_fits_its_shared_memory() -> None:
    """Four column groups with 2 tiles x 16 warps would need 64 KB of static partial sums: one tile instead;
    configs that fit are kept."""
    from kernels.awq_gemv_cuda import _small_config

    assert _small_config(AwqCudaConfig(tiles=2, warps=16), 4) == AwqCudaConfig(tiles=1, warps=16)
    assert _small_config(AwqCudaConfig(tiles=2, warps=16), 2) == AwqCudaConfig(tiles=2, warps=16)
    assert _small_config(AwqCudaConfig(tiles=4, warps=8), 4) == AwqCudaConfig(tiles=2, warps=8)


def test_early_trigger_env_parses_projection_names() -> None:
    from kernels.awq_gemv_cuda import parse_early_trigger

    assert parse_early_trigger("") == parse_early_trigger("none") == frozenset()
    assert parse_early_trigger(" o, down ,") == {"o", "down"}
    with pytest.raises(ValueError, match="unknown projection.*qkv.*known: o, gate_up, down \\(or none\\)"):
        parse_early_trigger("o,qkv")


def test_small_batch_chains_per_shape_class(monkeypatch) -> None:
    """2-8 rows (one column group) split the mma chains per shape class (default 4,2,2: qkv / o 4, gate_up 2,
    down 2); more rows keep one chain per group; an early refill is refused (the small kernel has none)."""
    import subprocess
    import sys

    from kernels import awq_gemv_cuda
    from kernels.awq_gemv_cuda import parse_chains, small_instance

    monkeypatch.setattr(awq_gemv_cuda, "SMALL_CHAINS", parse_chains("4,2,2"))
    assert small_instance(6144, 4096, 2, True)[0].endswith(", true, 1, 4>")
    assert small_instance(4096, 4096, 8, False)[0].endswith(", false, 1, 4>")
    assert small_instance(28672, 4096, 5, True)[0].endswith(", 1, 2>")
    assert small_instance(4096, 14336, 4, True)[0].endswith(", 1, 2>")
    assert small_instance(28672, 4096, 16, True)[0].endswith(", 2, 1>")
    assert small_instance(6144, 4096, 24, True)[0].endswith(", 4, 1>")
    monkeypatch.setattr(awq_gemv_cuda, "SMALL_CHAINS", parse_chains("1"))
    assert small_instance(28672, 4096, 2, True)[0].endswith(", 1, 1>")
    env = {**os.environ, "TESSERA_AWQ_CUDA_SMALL_CHAINS": "2e"}
    done = subprocess.run([sys.executable, "-c", "import kernels.awq_gemv_cuda"], env=env, capture_output=True,
                          text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode != 0 and "TESSERA_AWQ_CUDA_SMALL_CHAINS: the small-batch kernel has no early refill" in done.stderr


def test_chains_env_parses_split_and_early_refill(monkeypatch) -> None:
    from kernels import awq_gemv_cuda
    from kernels.awq_gemv_cuda import default_config, parse_chains

    assert parse_chains(" 2e ") == dict.fromkeys(("narrow", "wide", "long"), (2, True))
    assert parse_chains("4,1,2e") == {"narrow": (4, False), "wide": (1, False), "long": (2, True)}
    for bad in ("3", "e", "2x", "", "4,1", "4,1,2,2"):
        with pytest.raises(ValueError, match="TESSERA_AWQ_CUDA_CHAINS.*narrow, wide, long.*1, 2, 4"):
            parse_chains(bad)
    # each 8B projection gets its class's setting: qkv / o narrow, gate_up wide, down long
    monkeypatch.setattr(awq_gemv_cuda, "CHAINS", parse_chains("4,2,1e"))
    assert default_config(6144, 4096)[4:] == default_config(4096, 4096)[4:] == (4, False)
    assert default_config(28672, 4096)[4:] == (2, False)
    assert default_config(4096, 14336)[4:] == (1, True)
