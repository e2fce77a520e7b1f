"""The tensor-core FP8 GEMV (`kernels.fp8_gemv_cuda`): its NVRTC builds (CPU: NVRTC needs no GPU), the load-time
choice and fallback (CPU), and its output against the fp32 reference with every prologue and epilogue, activations
beyond fp16's range, and inside a CUDA graph (GPU)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernels import cuda_rtc
from kernels.cuda_rtc import CudaRtcError, compile_cubin
from kernels.fp8_gemv_cuda import Fp8CudaConfig, default_config, fp8_gemv_cuda, supports
from kernels.fp8_quant import FP8_DTYPE, quantize_weight_per_channel
from tests.kernels.test_awq_gemv_cuda import captured_on_side_stream, gemv_inputs

VARIANTS = [(p, bias, res, bf16) for p in (0, 1, 2) for bias in (False, True) for res in (False, True)
            for bf16 in (True, False)]


def _expr(cfg: Fp8CudaConfig, prologue: int, bias: bool, res: bool, bf16: bool) -> str:
    return (f"fp8_gemv_mma<{cfg.tiles}, {cfg.warps}, {cfg.depth}, {prologue}, {str(bias).lower()}, "
            f"{str(res).lower()}, {str(bf16).lower()}>")


def test_kernel_builds_for_sm89_and_sm90_only() -> None:
    """Every prologue / epilogue / dtype instance compiles for sm_90 (and the default config for sm_89, the
    first architecture with the e4m3 conversion); sm_80 has no such conversion and NVRTC refuses it, which is
    why `supports` asks for compute capability 8.9."""
    source = cuda_rtc.read_source("fp8_gemv.cu")
    assert "\n#include" not in source and "warp_sum" in source  # the header was pasted in
    for i, variant in enumerate(VARIANTS[::3] + [VARIANTS[-1]]):
        cfg = [Fp8CudaConfig(), Fp8CudaConfig(2, 16, 4), Fp8CudaConfig(4, 4, 3)][i % 3]
        cubin, lowered = compile_cubin(source, _expr(cfg, *variant), "sm_90")
        assert cubin[:4] == b"\x7fELF" and lowered.startswith("_Z12fp8_gemv_mma"), variant
    assert compile_cubin(source, _expr(Fp8CudaConfig(), 1, False, True, True), "sm_89")[0][:4] == b"\x7fELF"
    with pytest.raises(CudaRtcError, match="e4m3"):
        compile_cubin(source, _expr(Fp8CudaConfig(), 0, False, False, True), "sm_80")


def test_supports_refuses_what_the_kernel_cannot_take() -> None:
    """CPU tensors, other dtypes and shapes off the 16-row / 64-k grid stay on the Triton GEMV (no GPU needed:
    these checks come before any build)."""
    w = torch.zeros(64, 128, dtype=FP8_DTYPE)
    assert not supports(w, torch.bfloat16)  # on the CPU
    assert not supports(w.to(torch.bfloat16), torch.bfloat16)
    assert default_config(28672, 4096).tiles == 2 and default_config(4096, 14336).warps == 16


def test_build_failure_falls_back_with_one_warning(monkeypatch, caplog) -> None:
    from kernels import fp8_gemv_cuda

    def refuse(*args, **kwargs):
        raise CudaRtcError("NVRTC could not compile fp8_gemv_mma<...>:\nerror: unsupported gpu architecture")

    monkeypatch.setattr(cuda_rtc, "get_function", refuse)
    with caplog.at_level("WARNING", logger="kernels.cuda_rtc"):
        assert fp8_gemv_cuda._builds_on.__wrapped__(0, torch.bfloat16) is False
    assert [r.getMessage() for r in caplog.records] == [
        "FP8 CUDA GEMV unavailable on cuda:0 (error: unsupported gpu architecture); using the Triton GEMV"]


def test_finish_loading_marks_layers_and_logs(monkeypatch, caplog) -> None:
    """`Fp8LinearMethod.finish_loading`: with TESSERA_FP8_CUDA_GEMV=1 it asks `supports` once per layer and says
    in one line what decode uses; without, the layers stay on the Triton GEMV."""
    from engine.quant import fp8 as fp8_method
    from kernels import fp8_gemv_cuda

    layers = []
    for n in (32, 48):
        layer = nn.Module()
        layer.weight = SimpleNamespace(is_cuda=True, dtype=FP8_DTYPE, shape=(n, 64))  # stands in for a GPU tensor
        layer.fp8_act_dtype = torch.bfloat16
        layers.append(layer)
    monkeypatch.setattr(fp8_gemv_cuda, "supports", lambda w, dtype: w.shape[0] == 32 and dtype == torch.bfloat16)
    fp8_method.Fp8LinearMethod.finish_loading(layers)  # off by default (measured slower): nothing marked
    assert not any(hasattr(layer, "fp8_cuda_gemv") for layer in layers)
    monkeypatch.setattr(fp8_gemv_cuda, "ENABLED", True)
    with caplog.at_level("INFO", logger="engine.quant.fp8"):
        fp8_method.Fp8LinearMethod.finish_loading(layers)
    assert [layer.fp8_cuda_gemv for layer in layers] == [True, False]
    assert caplog.records[-1].getMessage().startswith("FP8 batch-1 GEMV: CUDA (1 of 2 layers; the others need")


def _reference(x, mode, gamma, weight, scale, bias=None, residual=None):
    """x' (the prologue rounded as the unfused ops round) @ dequantized W in fp32, then the epilogue."""
    if mode == "rms":
        rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)
        x = ((x.float() * rstd).to(x.dtype).float() * gamma.float()).to(x.dtype)
    elif mode == "silu":
        gate, up = x.float().chunk(2, dim=-1)
        x = (F.silu(gate).to(x.dtype).float() * up).to(x.dtype)
    y = (x.double() @ weight.double().t()).float() * scale
    if bias is not None:
        y = y + bias.float()
    if residual is not None:
        y = y.to(x.dtype).float() + residual.float()
    return y


def _weights(n: int, k: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    q, scale = quantize_weight_per_channel(torch.randn(n, k, generator=gen) * 0.05)
    return q.cuda(), scale.cuda()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["plain", "rms", "silu"])
@pytest.mark.parametrize("shape_cfg", [((4096, 6144), None), ((256, 48), Fp8CudaConfig(tiles=2)),
                                       ((14336, 512), Fp8CudaConfig(warps=16, depth=3)),
                                       ((1024, 64), Fp8CudaConfig(tiles=4, warps=4, depth=4))],
                         ids=["qkv-8b", "ragged", "down-like", "deep"])
def test_fp8_gemv_cuda_matches_reference_gpu(dtype, mode, shape_cfg) -> None:
    """Within a few 16-bit roundings of the output, also for a CTA past the last row (48 rows, 2 tiles per CTA),
    warps with no chunk (4 chunks, 8 warps) and a ring deeper than a warp's chunks; bias and residual on the
    RMSNorm / SiLU cases."""
    (k, n), cfg = shape_cfg
    w, scale = _weights(n, k, seed=k + n)
    x, gamma, residual, bias, kw = gemv_inputs(mode, n, k, dtype)
    out = fp8_gemv_cuda(x, w, scale, config=cfg, **kw)
    ref = _reference(x, mode, gamma, w, scale, bias, residual)
    tol = (2**-7 if dtype == torch.bfloat16 else 2**-9) * ref.abs().max().item()
    assert (out.float() - ref).abs().max().item() <= tol, (out.float() - ref).abs().max().item()


@pytest.mark.gpu
@pytest.mark.parametrize("magnitude", [1e6, 1e-12, 0.0])
def test_bf16_activations_beyond_fp16_range_gpu(magnitude: float) -> None:
    """bf16 x far above fp16's 65504 or far below its smallest normal: each warp's power-of-two rescale keeps
    them exact (no inf, no flush to zero); all-zero x gives zeros, not NaN. Then one such value per 64-k chunk
    among ordinary ones."""
    k, n = 2048, 64
    w, scale = _weights(n, k, seed=7)
    torch.manual_seed(1)
    x = (torch.randn(1, k, device="cuda") * magnitude).to(torch.bfloat16)
    out = fp8_gemv_cuda(x, w, scale).float()
    ref = _reference(x, "plain", None, w, scale)
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max().item() <= 2**-7 * ref.abs().max().item()
    if magnitude:
        # every warp's range holds one: a scale from anything but the warp's own maximum overflows fp16 (1e6)
        x = torch.randn(1, k, device="cuda").to(torch.bfloat16)
        x[0, ::64] = magnitude
        out = fp8_gemv_cuda(x, w, scale).float()
        ref = _reference(x, "plain", None, w, scale)
        assert (out - ref).abs().max().item() <= 2**-7 * ref.abs().max().item()


@pytest.mark.gpu
def test_fp8_gemv_cuda_in_cuda_graph_gpu() -> None:
    """Launches on torch's current stream: a captured graph replays with new inputs."""
    w, scale = _weights(64, 512, seed=3)
    x = torch.zeros(1, 512, device="cuda", dtype=torch.bfloat16)
    fp8_gemv_cuda(x, w, scale)  # compile outside the capture
    graph, out = captured_on_side_stream(lambda: fp8_gemv_cuda(x, w, scale))
    x.copy_(torch.randn(1, 512, device="cuda").to(torch.bfloat16))
    graph.replay()
    torch.cuda.synchronize()
    ref = _reference(x, "plain", None, w, scale)
    assert (out.float() - ref).abs().max().item() <= 2**-7 * ref.abs().max().item()


@pytest.mark.gpu
def test_supports_on_this_gpu() -> None:
    """On an sm_89+ GPU with NVRTC the kernel takes the 8B shapes, on older GPUs (no e4m3 conversion) none; shapes
    off its grid it never takes."""
    w = torch.zeros(6144, 4096, dtype=FP8_DTYPE, device="cuda")
    capable = torch.cuda.get_device_capability() >= (8, 9)
    assert supports(w, torch.bfloat16) == capable and supports(w, torch.float16) == capable
    assert not supports(w[:, :4000], torch.bfloat16) and not supports(w[:6008], torch.bfloat16)
