"""Programmatic dependent launch (kernels/pdl.py) for the batch-1 GEMVs.

CPU: PDL is never on without an sm_90 GPU, whatever is asked, and the launch keyword appears only when on.
GPU (`-m gpu`, Hopper): every GEMV variant the fused decode path launches (bf16 one-pass and split-K, FP8 plain,
lean and split-K with its reduce launch), chained as a decode layer's projections and captured in a CUDA graph,
gives bit-identical outputs with PDL on and off: the kernels wait for the previous grid before they read
anything it wrote.
"""

from __future__ import annotations

import pytest
import torch

from kernels import pdl
from kernels.fp8_gemv import Fp8GemvConfig, fp8_gemv
from kernels.gemv import GemvConfig, fused_gemv


def test_pdl_is_off_without_a_hopper_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pdl.PDL_ENV, "1")
    assert not pdl.enabled(torch.device("cpu"))
    pdl.set_enabled(True)
    try:
        assert not pdl.enabled(torch.device("cpu"))
    finally:
        pdl.set_enabled(None)
    assert pdl.launch_options(False) == {}
    assert pdl.launch_options(True) == {"launch_pdl": True}


def _chain(h, weights, norms, fp8: bool, configs):
    """qkv (RMSNorm) -> o (+ residual, in place) -> gate_up (RMSNorm) -> down (SiLU-mul, + residual)."""
    def proj(x, name, **kw):
        w, scale = weights[name]
        if fp8:
            return fp8_gemv(x, w, scale, config=configs.get(name), **kw)
        return fused_gemv(x, w, config=configs.get(name), **kw)

    for _ in range(2):
        qkv = proj(h, "qkv", norm_weight=norms[0])
        proj(qkv[:, :1024], "o", residual=h, out=h)
        gate_up = proj(h, "gate_up", norm_weight=norms[1])
        proj(gate_up, "down", silu_mul=True, residual=h, out=h)
    return h


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", [False, True], ids=["bf16", "fp8"])
@pytest.mark.parametrize("variant", ["tuned", "split"])
def test_pdl_chain_bit_identical_gpu(fp8: bool, variant: str) -> None:
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("PDL needs sm_90+")
    if not pdl.HAS_GDC:
        pytest.skip("this Triton has no gdc_wait")
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = {"qkv": (1536, 1024), "o": (1024, 1024), "gate_up": (7168, 1024), "down": (1024, 3584)}
    weights = {}
    for name, (n, k) in shapes.items():
        w = torch.randn(n, k, generator=gen, device="cuda") / k ** 0.5
        if fp8:
            scale = w.abs().amax(dim=1) / 448.0
            weights[name] = ((w / scale[:, None]).to(torch.float8_e4m3fn), scale.contiguous())
        else:
            weights[name] = (w.bfloat16(), None)
    norms = [(1 + 0.1 * torch.randn(1024, generator=gen, device="cuda")).bfloat16() for _ in range(2)]
    h0 = torch.randn(1, 1024, generator=gen, device="cuda").bfloat16()
    if variant == "tuned":
        configs = {}
    elif fp8:  # split-K with the reduce launch, the lean loop with and without split, the plain loop
        configs = {"qkv": Fp8GemvConfig(16, 1024, 4, lean=2), "o": Fp8GemvConfig(8, 256, 4, split_k=4),
                   "gate_up": Fp8GemvConfig(8, 1024, 4), "down": Fp8GemvConfig(16, 1024, 4, split_k=2, lean=1)}
    else:  # the one-pass kernel (peeled first tile) and split-K (arrival counters)
        configs = {"qkv": GemvConfig(16, 256, 4, 3), "o": GemvConfig(8, 256, 4, 1, split_k=4),
                   "gate_up": GemvConfig(8, 512, 4, 2), "down": GemvConfig(8, 512, 4, 1, split_k=2)}
    h = torch.empty_like(h0)
    out = {}
    try:
        for on in (False, True):
            pdl.set_enabled(on)
            h.copy_(h0)
            eager = _chain(h, weights, norms, fp8, configs).clone()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                _chain(h, weights, norms, fp8, configs)
            h.copy_(h0)
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(h, eager), f"PDL {on}: graph replay differs from eager"
            assert torch.isfinite(h).all()
            out[on] = h.clone()
    finally:
        pdl.set_enabled(None)
    assert torch.equal(out[True], out[False])
