"""What the RMSNorm prologue costs the batch-1 FP8 GEMV: each 8B projection shape with its swept tile, timed with the
RMSNorm prologue (the row statistics recomputed by every program, then x * rstd * gamma per chunk) and without any
prologue (x read as it is): mean of 200 CUDA graph replays (`bench.kernels_bench.bench_us`), each one launch per
weight copy (2-8 copies, larger than L2 together). Eager timing measured the host's launch rate, not the kernel.

    python3 bench/fp8_prologue_cost.py
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.kernels_bench import bench_us  # noqa: E402
from kernels.fp8_gemv import fp8_gemv, pick_config  # noqa: E402
from kernels.fp8_quant import FP8_DTYPE  # noqa: E402

SHAPES = {"qkv": (6144, 4096), "gate_up": (28672, 4096), "o": (4096, 4096), "lm_head": (128256, 4096)}


def _per_copy_us(x, ws, s, cfg, gamma) -> float:
    """us per GEMV: one launch per weight copy in a CUDA graph (so each streams from DRAM, not L2)."""
    kwargs = {"norm_weight": gamma, "eps": 1e-5} if gamma is not None else {}
    return bench_us(lambda: [fp8_gemv(x, w, s, config=cfg, **kwargs) for w in ws], reps=200,
                    calls_per_graph=1) / len(ws)


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("fp8_prologue_cost.py: needs a CUDA GPU")
    dev = torch.device("cuda", 0)
    print(f"{'op':8} {'tile':40} {'none us':>8} {'rms us':>8} {'TB/s none':>9} {'TB/s rms':>8}")
    for name, (n, k) in SHAPES.items():
        copies = max(2, min(8, (1 << 30) // (n * k)))
        ws = [torch.empty(n, k, device=dev, dtype=torch.float16).uniform_(-448, 448).to(FP8_DTYPE) for _ in range(copies)]
        s = torch.full((n,), 1e-4, device=dev)
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        gamma = (torch.rand(k, device=dev) + 0.5).to(torch.bfloat16)
        cfg = pick_config(n, k, dev)
        times = {prologue: _per_copy_us(x, ws, s, cfg, gamma if prologue == "rms" else None)
                 for prologue in ("none", "rms")}
        tile = f"{cfg.block_n}/{cfg.block_k}/{cfg.num_warps} lean {cfg.lean}"
        print(f"{name:8} {tile:40} {times['none']:8.2f} {times['rms']:8.2f} {n * k / times['none'] / 1e6:9.3f} "
              f"{n * k / times['rms'] / 1e6:8.3f}", flush=True)
        del ws


if __name__ == "__main__":
    main()
