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

from bench.pdl_bench import build_layers, run_engine_layers
from kernels import pdl
from kernels.fp8_gemv import Fp8GemvConfig
from kernels.gemv import GemvConfig

# The 8B layer's projections at a quarter of the width: (name, N, K), o's N the hidden size.
SMALL_LAYER = (("qkv", 1536, 1024), ("o", 1024, 1024), ("gate_up", 7168, 1024), ("down", 1024, 3584))


def test_pdl_is_off_without_a_hopper_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv(pdl.PDL_ENV, "1")
    assert not pdl.enabled(cpu)
    pdl.set_enabled(True)
    try:
        assert not pdl.enabled(cpu)
        assert pdl.kernel_options(cpu) == {}  # kernels keep PDL=False and get no launch keyword
    finally:
        pdl.set_enabled(None)
    # early KV (on by default) and the GEMVs' trigger for it also need griddepcontrol
    monkeypatch.setattr(pdl, "EARLY_KV", True)
    monkeypatch.setattr(pdl, "O_AFTER_ATTENTION", True)
    monkeypatch.setattr(pdl, "GEMV_CHAIN", pdl._gemv_chain_setting("o,gate_up,down"))
    assert not pdl.early_kv_enabled(cpu) and not pdl.o_after_attention(cpu)
    assert pdl.gemv_chain(cpu, "fp8") == pdl.gemv_chain(cpu, "16-bit") == frozenset()
    assert pdl.trigger_options(cpu, True) == {} and pdl.kernel_options(cpu, True) == {}


@pytest.mark.gpu
@pytest.mark.parametrize("fp8", [False, True], ids=["bf16", "fp8"])
@pytest.mark.parametrize("variant", ["tuned", "split"])
def test_pdl_chain_bit_identical_gpu(fp8: bool, variant: str) -> None:
    """Two layers chained (qkv with RMSNorm -> o + residual in place -> gate_up with RMSNorm -> down with SiLU-mul +
    residual), eager and captured in a CUDA graph, with PDL off and on."""
    pdl.set_enabled(True)
    try:  # the device machine is Hopper with Triton >= 3.4: PDL must really be on, or the test proves nothing
        assert pdl.enabled(torch.device("cuda")), "PDL unavailable here: needs sm_90+ and Triton >= 3.4"
    finally:
        pdl.set_enabled(None)
    layers = build_layers(2, fp8, "cuda", shapes=SMALL_LAYER)
    h0 = torch.randn(1, 1024, device="cuda").bfloat16()
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
            eager = run_engine_layers(layers, h, fp8, configs).clone()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run_engine_layers(layers, h, fp8, configs)
            h.copy_(h0)
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(h, eager), f"PDL {on}: graph replay differs from eager"
            assert torch.isfinite(h).all()
            out[on] = h.clone()
    finally:
        pdl.set_enabled(None)
    assert torch.equal(out[True], out[False])


def test_gemv_chain_makes_the_gemv_after_each_named_projection_a_pdl_launch() -> None:
    # o -> gate_up, gate_up -> down, down -> the next layer's qkv; an edge not named leaves `TESSERA_PDL` in charge
    assert pdl.chained_after(frozenset({"gate_up"}), "down") is True
    assert pdl.chained_after(frozenset({"gate_up"}), "gate_up") is None
    assert pdl.chained_after(frozenset({"down"}), "qkv") is True
    assert pdl.chained_after(frozenset({"o", "down"}), "down") is None
    assert pdl.chained_after(frozenset(), "qkv") is None
    assert pdl._parse_gemv_chain("gate_up, down") == frozenset({"gate_up", "down"})
    assert pdl._parse_gemv_chain("none") == frozenset()
    with pytest.raises(ValueError, match="TESSERA_PDL_GEMV_CHAIN: unknown projection"):
        pdl._parse_gemv_chain("1")
    # unset: the measured edges per weight format; set: the same edges for both
    assert pdl._gemv_chain_setting(None) == {"fp8": {"gate_up", "down"}, "16-bit": {"down"}}
    assert pdl._gemv_chain_setting("none") == {"fp8": frozenset(), "16-bit": frozenset()}
    assert pdl._gemv_chain_setting("o") == {"fp8": {"o"}, "16-bit": {"o"}}
