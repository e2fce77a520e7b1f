"""`kernels.fp8_layer_tail` (o + RMSNorm/gate_up + SiLU/down in one persistent launch) against the three
`kernels.fp8_gemv` launches it replaces (same tiles: bit-identical) and against the layer's torch expressions with
the dequantized weights.

CPU: Triton's interpreter, one program (it runs programs one after another, so a grid barrier needs one).
GPU (`-m gpu`): the 8B shapes and ragged ones, with the grid the launcher sizes (every program resident) and
with smaller grids (more row blocks per program), repeated launches (the barrier counters reset themselves) and
inside a CUDA graph.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels.fp8_gemv import Fp8GemvConfig, fp8_gemv
from kernels.fp8_layer_tail import Fp8TailConfig, fp8_layer_tail, resident_per_sm
from kernels.fp8_quant import dequantize, quantize_weight_per_channel


def _layer(h: int, q: int, inter: int, dtype: torch.dtype, device: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)

    def weight(n: int, k: int):
        w, s = quantize_weight_per_channel(torch.randn(n, k, generator=gen) / k ** 0.5)
        return w.to(device), s.to(device)

    return dict(
        attn_out=torch.randn(1, q, generator=gen).to(dtype).to(device),
        stream=(2 * torch.randn(1, h, generator=gen)).to(dtype).to(device),
        o=weight(h, q), gate_up=weight(2 * inter, h), down=weight(h, inter),
        norm_weight=(1 + 0.2 * torch.randn(h, generator=gen)).to(dtype).to(device), eps=1e-5,
    )


def _tail(layer: dict, config: Fp8TailConfig, programs: int | None = None) -> torch.Tensor:
    return fp8_layer_tail(layer["attn_out"], layer["stream"], *layer["o"], layer["norm_weight"], layer["eps"],
                          *layer["gate_up"], *layer["down"], config=config, programs=programs)


def _three_launches(layer: dict, config: Fp8TailConfig) -> torch.Tensor:
    def tile(block_n: int, lean: int) -> Fp8GemvConfig:
        return Fp8GemvConfig(block_n=block_n, block_k=config.block_k, num_warps=config.num_warps, lean=lean)

    h = fp8_gemv(layer["attn_out"], *layer["o"], residual=layer["stream"], config=tile(config.block_n_o,
                                                                                         config.lean_o))
    gate_up = fp8_gemv(h, *layer["gate_up"], norm_weight=layer["norm_weight"], eps=layer["eps"],
                       config=tile(config.block_n_gate_up, config.lean_gate_up))
    return fp8_gemv(gate_up, *layer["down"], silu_mul=True, residual=h,
                    config=tile(config.block_n_down, config.lean_down))


def _torch_layer(layer: dict) -> torch.Tensor:
    """The unfused model's expressions (HF rounding steps) with the dequantized weights, in fp32 products."""
    from kernel_ref import rmsnorm_ref

    dtype = layer["stream"].dtype

    def linear(x, pair):
        return (x.float() @ dequantize(*pair).float().t()).to(dtype)

    h = (linear(layer["attn_out"], layer["o"]).float() + layer["stream"].float()).to(dtype)
    gate, up = linear(rmsnorm_ref(h, layer["norm_weight"], layer["eps"]), layer["gate_up"]).chunk(2, dim=-1)
    act = (F.silu(gate.float()).to(dtype).float() * up.float()).to(dtype)
    return (linear(act, layer["down"]).float() + h.float()).to(dtype)


# ----------------------------------------------------------------------------------------------- CPU
# The interpreter ignores num_warps; num_warps 1 keeps the K chunk (256 x num_warps) small. Ragged shapes exercise
# the masked loads and a last row block that is partly past N.
CPU_CASES = [
    ((64, 64, 96), Fp8TailConfig(block_n_o=8, lean_o=1, block_n_gate_up=8, lean_gate_up=2, block_n_down=8,
                                 lean_down=1, num_warps=1)),
    ((300, 256, 520), Fp8TailConfig(block_n_o=16, lean_o=2, block_n_gate_up=32, lean_gate_up=1, block_n_down=8,
                                    lean_down=3, num_warps=1)),
]


@pytest.mark.parametrize(("shape", "config"), CPU_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp8_layer_tail_matches_three_launches_interpreter(shape, config: Fp8TailConfig, dtype: torch.dtype) -> None:
    layer = _layer(*shape, dtype, "cpu", seed=1)
    got = _tail(layer, config)
    torch.testing.assert_close(got, _three_launches(layer, config), atol=0, rtol=0)
    # Against the model's own expressions: the same rounding steps, fp32 sums in another order; the residual
    # stream is ~N(0, 4), so one 16-bit step of it is the tolerance.
    torch.testing.assert_close(got, _torch_layer(layer), atol=6e-2, rtol=2e-2)
    assert layer["stream"].abs().sum() > 0 and not torch.equal(got, layer["stream"])  # the layer did add something


def test_resident_per_sm_counts_like_the_occupancy_calculator() -> None:
    class Hopper:
        regs_per_multiprocessor = 65536
        max_threads_per_multi_processor = 2048
        shared_memory_per_multiprocessor = 233472

    # 4 warps: 128 registers -> 4 programs (16 warps of 4096 registers), 149 -> 152 (rounded to 8) -> 3.
    assert resident_per_sm(128, 0, 4, Hopper) == 4
    assert resident_per_sm(149, 0, 4, Hopper) == 3
    assert resident_per_sm(32, 0, 4, Hopper) == 16  # the 64-warp limit
    assert resident_per_sm(32, 0, 1, Hopper) == 32  # the 32-block limit
    assert resident_per_sm(64, 100_000, 4, Hopper) == 2  # shared memory (+1 KiB reserved per block)
    assert resident_per_sm(255, 0, 16, Hopper) == 0  # does not fit: the launcher refuses it


# ----------------------------------------------------------------------------------------------- GPU
GPU_SHAPES = [(4096, 4096, 14336), (1000, 768, 1400)]


@pytest.mark.gpu
@pytest.mark.parametrize(("shape", "dtype"), [(GPU_SHAPES[0], torch.bfloat16), (GPU_SHAPES[1], torch.float16)])
def test_fp8_layer_tail_gpu(shape, dtype: torch.dtype) -> None:
    # The device machine is Hopper: the e4m3 conversion and a cooperative launch must really run here.
    assert torch.cuda.get_device_capability() >= (8, 9), "the FP8 layer tail needs an sm_89+ GPU"
    layer = _layer(*shape, dtype, "cuda", seed=2)
    config = Fp8TailConfig()
    reference = _three_launches(layer, config)
    torch.testing.assert_close(_tail(layer, config), reference, atol=0, rtol=0)
    for programs in (7, 61):  # several row blocks per program in every phase
        torch.testing.assert_close(_tail(layer, config, programs=programs), reference, atol=0, rtol=0)
    other = Fp8TailConfig(block_n_o=16, lean_o=1, block_n_gate_up=16, lean_gate_up=2, block_n_down=8, lean_down=2)
    torch.testing.assert_close(_tail(layer, other), _three_launches(layer, other), atol=0, rtol=0)
    torch.testing.assert_close(_tail(layer, config), _torch_layer(layer), atol=6e-2, rtol=2e-2)

    # Replayed from a CUDA graph many times: the counters reset themselves each launch.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        _tail(layer, config)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _tail(layer, config)
    for _ in range(20):
        graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, reference, atol=0, rtol=0)
