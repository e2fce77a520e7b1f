"""Programmatic dependent launch (PDL) on a chain of batch-1 GEMVs in a CUDA graph: what the gaps and
ramps between a decode step's ~130 kernels cost, and how much of it PDL gives back.

The FP8 batch-1 step spends ~0.16 ms in gaps between kernels and its small projections (qkv, o) run at
~2.5 TB/s against ~3.65 for gate_up (bench/RESULTS.md, tenth session): each kernel waits for the last one to
drain before its first loads go out. With PDL (Hopper; `launch_pdl=True` and `griddepcontrol` in the kernel)
the next kernel's programs start while the last one finishes, wait at `gdc_wait` for its writes, and - in
mode 2 - have their first weight chunk loaded before that wait (weights never depend on the last kernel).

    python3 bench/pdl_bench.py [--fp8] [--layers 32]
    python3 bench/pdl_bench.py --engine-kernels [--fp8]   # the engine's fused GEMVs, TESSERA_PDL off vs on

The chain is the Llama-3.1-8B layer's four projections (qkv 6144x4096, o 4096x4096, gate_up 28672x4096,
down 4096x14336) over `--layers` layers of distinct random weights, each GEMV's input the previous one's
output. A plain Triton GEMV (not the engine's tuned kernels): the point is the difference between modes,
which must also agree bit for bit (the wait is what makes that true).

`--engine-kernels` runs the engine's own batch-1 layer instead (`kernels.gemv.fused_gemv`, or
`kernels.fp8_gemv.fp8_gemv` with `--fp8`, this device's tuned tiles): qkv with the RMSNorm prologue, o with the
residual add, gate_up with RMSNorm, down with SiLU-and-mul and the residual (attention and rotary left out: the
first 4096 qkv outputs stand in for the attention output), with `kernels/pdl.py` off and on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.roofline import copy_bandwidth_tbs, median_ms  # noqa: E402

try:  # Triton >= 3.4
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - reported by main()
    gdc_wait = gdc_launch_dependents = None

SHAPES = (("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336))
MODES = {0: "no PDL", 1: "PDL, wait first", 2: "PDL, first weights before the wait"}


@triton.jit
def _gemv(w_ptr, x_ptr, y_ptr, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, MODE: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    w_ptrs = w_ptr + rows[:, None] * K + cols[None, :]
    if MODE == 2:  # the weights do not depend on the previous kernel: load before waiting for it
        w = tl.load(w_ptrs)
        gdc_wait()
        gdc_launch_dependents()
    elif MODE == 1:
        gdc_wait()
        gdc_launch_dependents()
        w = tl.load(w_ptrs)
    else:
        w = tl.load(w_ptrs)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + k + cols).to(tl.float32)
        nxt = tl.load(w_ptrs + k + BLOCK_K, mask=(k + BLOCK_K + cols[None, :]) < K, other=0.0)
        acc += tl.sum(w.to(tl.float32) * x[None, :], axis=1)
        w = nxt
    tl.store(y_ptr + rows, acc.to(y_ptr.dtype.element_ty))


def build_chain(layers: int, fp8: bool, device: torch.device):
    gen = torch.Generator(device=device).manual_seed(0)
    weights = []
    for _ in range(layers):
        for _, n, k in SHAPES:  # variance-preserving scale, so 4 x layers GEMVs neither vanish nor overflow
            w = torch.randn(n, k, generator=gen, device=device, dtype=torch.float32) / k ** 0.5
            weights.append((w.to(torch.float8_e4m3fn) if fp8 else w.to(torch.bfloat16), n, k))
    x = torch.randn(max(k for _, _, k in SHAPES), generator=gen, device=device).to(torch.bfloat16)
    ys = [torch.empty(max(n for _, n, _ in SHAPES), dtype=torch.bfloat16, device=device) for _ in range(2)]
    return weights, x, ys


def run_chain(weights, x, ys, mode: int, block_n: int, block_k: int) -> torch.Tensor:
    src = x
    for i, (w, n, k) in enumerate(weights):
        dst = ys[i % 2]
        kwargs = {"launch_pdl": True} if mode else {}
        _gemv[(n // block_n,)](w, src, dst, k, BLOCK_N=block_n, BLOCK_K=block_k, MODE=mode, num_warps=4, **kwargs)
        src = dst
    return src


def build_layers(layers: int, fp8: bool, device: torch.device | str, shapes=SHAPES):
    """Per layer: the four projections' weights (FP8 with per-channel scales, or bf16 and None) and the two RMSNorm
    gammas, random. `shapes` as SHAPES: (name, N, K) for qkv, o, gate_up, down (o's N is the hidden size)."""
    from kernels.fp8_quant import quantize_weight_per_channel

    gen = torch.Generator(device=device).manual_seed(0)
    hidden = dict((name, n) for name, n, _ in shapes)["o"]
    out = []
    for _ in range(layers):
        layer = {}
        for name, n, k in shapes:
            w = torch.randn(n, k, generator=gen, device=device, dtype=torch.float32) / k ** 0.5
            layer[name] = quantize_weight_per_channel(w) if fp8 else (w.to(torch.bfloat16), None)
        layer["norms"] = [(1.0 + 0.1 * torch.randn(hidden, generator=gen, device=device)).to(torch.bfloat16)
                          for _ in range(2)]
        out.append(layer)
    return out


def run_engine_layers(layers, h: torch.Tensor, fp8: bool, configs: dict | None = None) -> torch.Tensor:
    """The fused batch-1 layer over `layers`, h [1, hidden] the residual stream (updated in place); `configs` may
    pin a projection's tile by name (default: this device's tuned tiles)."""
    from kernels.fp8_gemv import fp8_gemv
    from kernels.gemv import fused_gemv

    configs = configs or {}

    def proj(x, layer, name, **kw):
        w, scale = layer[name]
        if fp8:
            return fp8_gemv(x, w, scale, config=configs.get(name), **kw)
        return fused_gemv(x, w, config=configs.get(name), **kw)

    for layer in layers:
        qkv = proj(h, layer, "qkv", norm_weight=layer["norms"][0])
        proj(qkv[:, :h.shape[1]], layer, "o", residual=h, out=h)  # the first hidden outputs stand in for attention
        gate_up = proj(h, layer, "gate_up", norm_weight=layer["norms"][1])
        proj(gate_up, layer, "down", silu_mul=True, residual=h, out=h)
    return h


def main_engine_kernels(ns) -> None:
    from kernels import pdl

    device = torch.device("cuda", 0)
    layers = build_layers(ns.layers, ns.fp8, device)
    total_bytes = sum(layer[name][0].numel() * layer[name][0].element_size() for layer in layers
                      for name, _, _ in SHAPES)
    h0 = torch.randn(1, 4096, device=device).to(torch.bfloat16)
    h = torch.empty_like(h0)  # the residual stream, updated in place by o and down
    report = {"device": torch.cuda.get_device_name(), "triton": triton.__version__, "fp8": ns.fp8,
              "layers": ns.layers, "weight_gb": round(total_bytes / 1e9, 3), "modes": {}}
    graphed = {}
    for on in (False, True):
        pdl.set_enabled(on)
        h.copy_(h0)
        run_engine_layers(layers, h, ns.fp8)  # compiles; the split-K counters exist before capture
        h.copy_(h0)
        eager = run_engine_layers(layers, h, ns.fp8).clone()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run_engine_layers(layers, h, ns.fp8)

        def replay(graph=graph):
            h.copy_(h0)
            graph.replay()

        replay()
        torch.cuda.synchronize()
        graphed[on] = h.clone()
        ms = median_ms(replay, ns.reps)
        name = "PDL" if on else "no PDL"
        report["modes"][name] = {"graph_ms": round(ms, 3), "tbs": round(total_bytes / (ms * 1e-3) / 1e12, 3),
                                 "graph_equals_eager": bool(torch.equal(graphed[on], eager)),
                                 "finite": bool(torch.isfinite(eager).all())}
        print(f"{name}: {json.dumps(report['modes'][name])}", flush=True)
    pdl.set_enabled(None)
    report["pdl_equals_no_pdl"] = bool(torch.equal(graphed[True], graphed[False]))
    print("PDL " + json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--fp8", action="store_true", help="e4m3 weights (the FP8 batch-1 path's bytes per kernel)")
    parser.add_argument("--block-n", type=int, default=8)
    parser.add_argument("--block-k", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--engine-kernels", action="store_true",
                        help="the engine's fused batch-1 GEMVs with their prologues, kernels/pdl.py off vs on")
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("pdl_bench needs a CUDA GPU")
    if gdc_wait is None:
        raise SystemExit(f"triton {triton.__version__} has no triton.language.extra.cuda.gdc_wait (PDL needs >= 3.4)")
    if ns.engine_kernels:
        main_engine_kernels(ns)
        return
    device = torch.device("cuda", 0)
    weights, x, ys = build_chain(ns.layers, ns.fp8, device)
    total_bytes = sum(w.numel() * w.element_size() for w, _, _ in weights)
    copy = copy_bandwidth_tbs()
    report = {"device": torch.cuda.get_device_name(), "triton": triton.__version__, "fp8": ns.fp8,
              "kernels": len(weights), "weight_gb": round(total_bytes / 1e9, 3), "copy_tbs": round(copy, 3),
              "floor_ms": round(total_bytes / (copy * 1e12) * 1e3, 3), "modes": {}}
    reference = None
    for mode, name in MODES.items():
        try:
            out = run_chain(weights, x, ys, mode, ns.block_n, ns.block_k).clone()  # compiles; eager result
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run_chain(weights, x, ys, mode, ns.block_n, ns.block_k)
            graph.replay()
            torch.cuda.synchronize()
            graphed = ys[(len(weights) - 1) % 2].clone()
        except Exception as exc:  # one line per failed mode, the others still run
            report["modes"][name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            print(f"{name}: {report['modes'][name]['error']}", flush=True)
            continue
        ms = median_ms(graph.replay, ns.reps)
        reference = out if reference is None else reference
        row = {"graph_ms": round(ms, 3), "us_per_kernel": round(ms * 1e3 / len(weights), 2),
               "tbs": round(total_bytes / (ms * 1e-3) / 1e12, 3),
               "eager_equals_no_pdl": bool(torch.equal(out, reference)), "graph_equals_eager": bool(torch.equal(graphed, out))}
        report["modes"][name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
    print("PDL " + json.dumps(report))


if __name__ == "__main__":
    main()
