"""AWQ W4A16 kernels (`kernels.awq_gemm`, `kernels.awq_gemv`) on the decoder projections of a model shape, against bf16 cuBLAS.

    python bench/awq_bench.py [--model bench/models/llama-3.1-8b] [--quick]

1. Batch 1: `awq_gemv` over a sweep of tile / split-K configurations vs bf16 `F.linear` on the same
   shape, as effective TB/s of the bytes each streams (int4 weights + zeros + scales vs bf16 weights)
   and the speed-up; the best configuration per shape is what `AwqGemvConfig` defaults should become.
2. M rows (batched decode, prefill chunks): `awq_gemm` vs dequantize + cuBLAS vs bf16 cuBLAS in TFLOP/s,
   to place `DEQUANT_MATMUL_MIN_ROWS` (engine/quant/awq.py) where the Triton GEMM stops winning.
Every op cycles over enough weight copies to miss L2, inside a CUDA graph. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gemv_bench import shapes  # noqa: E402
from bench.kernels_bench import bench_us  # noqa: E402
from bench.roofline import copy_bandwidth_tbs  # noqa: E402
from engine.quant.awq import dequantize_awq  # noqa: E402
from kernels.awq_gemm import awq_dequantize, awq_gemm  # noqa: E402
from kernels.awq_gemv import AwqGemvConfig, awq_gemv, gemv_locks  # noqa: E402

DTYPE = torch.bfloat16
GROUP = 128


def _awq_copy(k: int, n: int):
    qweight = torch.randint(-2**31, 2**31 - 1, (k, n // 8), dtype=torch.int32, device="cuda")
    qzeros = torch.randint(-2**31, 2**31 - 1, (k // GROUP, n // 8), dtype=torch.int32, device="cuda")
    scales = (torch.rand(k // GROUP, n, device="cuda") * 1e-3).to(DTYPE)
    return qweight, qzeros, scales


def _copies(nbytes: int, l2_bytes: int = 256 << 20) -> int:
    return max(2, math.ceil(l2_bytes / nbytes))


def gemv_configs(quick: bool) -> list[AwqGemvConfig | None]:
    if quick:
        return [None, AwqGemvConfig(block_n=128, block_k=64), AwqGemvConfig(block_n=512, block_k=32, num_warps=8)]
    sweep = [AwqGemvConfig(block_n=bn, block_k=bk, num_warps=w)
             for bn, bk, w in itertools.product((128, 256, 512), (32, 64, 128), (4, 8))]
    # split_k None sizes the split for ~4 programs per SM; fixed splits show whether fewer is better.
    return [None, *sweep, *(AwqGemvConfig(split_k=s) for s in (2, 4, 8, 16))]


def bench_gemv(name: str, n: int, k: int, quick: bool) -> dict:
    awq_bytes = k * n // 2 + (k // GROUP) * n * (2 + 0.5)
    bf16_bytes = k * n * 2
    awq = [_awq_copy(k, n) for _ in range(_copies(int(awq_bytes)))]
    dense = [torch.randn(n, k, device="cuda").to(DTYPE) for _ in range(_copies(bf16_bytes))]
    x = torch.randn(1, k, device="cuda").to(DTYPE)
    bf16_us = bench_us(lambda: [F.linear(x, w) for w in dense], calls_per_graph=1) / len(dense)
    ref = x.float() @ dequantize_awq(*awq[0], GROUP).float()
    locks = gemv_locks(n, x.device)  # as each engine layer holds (allocated outside the graph)
    results = []
    for cfg in gemv_configs(quick):
        try:
            err = (awq_gemv(x, *awq[0], GROUP, config=cfg).float() - ref).abs().max().item()
            us = bench_us(lambda cfg=cfg: [awq_gemv(x, *w, GROUP, config=cfg, locks=locks) for w in awq],
                          calls_per_graph=1) / len(awq)
        except Exception as exc:  # noqa: BLE001 - a config that does not compile is skipped, loudly
            print(json.dumps({"op": name, "config": str(cfg), "error": str(exc).splitlines()[0][:160]}))
            continue
        results.append((us, cfg, err))
        print(json.dumps({"op": name, "m": 1, "config": cfg._asdict() if cfg else "default", "us": round(us, 2),
                          "tbs": round(awq_bytes / us / 1e6, 3), "max_err": err}), flush=True)
    default_us = results[0][0]
    best = min(results, key=lambda r: r[0])
    return {"op": name, "n": n, "k": k, "bf16_us": round(bf16_us, 2), "bf16_tbs": round(bf16_bytes / bf16_us / 1e6, 3),
            "awq_default_us": round(default_us, 2), "awq_best_us": round(best[0], 2),
            "awq_best_tbs": round(awq_bytes / best[0] / 1e6, 3),
            "best_config": best[1]._asdict() if best[1] else "default",
            "speedup_default": round(bf16_us / default_us, 2), "speedup_best": round(bf16_us / best[0], 2)}


def bench_rows(name: str, n: int, k: int, m: int) -> dict:
    awq = _awq_copy(k, n)
    dense = torch.randn(n, k, device="cuda").to(DTYPE)
    x = torch.randn(m, k, device="cuda").to(DTYPE)
    flops = 2 * m * n * k
    res = {"op": name, "m": m, "n": n, "k": k}
    locks = gemv_locks(n, x.device)
    for label, fn in (("bf16", lambda: F.linear(x, dense)), ("awq_gemm", lambda: awq_gemm(x, *awq, GROUP, locks=locks)),
                      ("dequant_matmul", lambda: x @ awq_dequantize(*awq, GROUP))):
        us = bench_us(fn, calls_per_graph=2)
        res[f"{label}_us"] = round(us, 2)
        res[f"{label}_tflops"] = round(flops / us / 1e6, 1)
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", default="4,16,64,256,1024,4096")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(json.dumps({"device": torch.cuda.get_device_name(), "copy_tbs": round(copy_bandwidth_tbs(), 3)}), flush=True)
    layer = [(name, n, k) for name, n, k, _ in shapes(args.model) if name != "lm_head"]
    summary = []
    for name, n, k in layer:
        summary.append(bench_gemv(name, n, k, args.quick))
        print(json.dumps(summary[-1]), flush=True)
        torch.cuda.empty_cache()
    for (name, n, k), m in itertools.product(layer, [int(r) for r in args.rows.split(",")]):
        bench_rows(name, n, k, m)
    print(f"\n{'op':8} {'N x K':>13} {'bf16 us':>8} {'awq us':>8} {'best us':>8} {'TB/s':>6} {'x bf16':>6}  best config")
    for r in summary:
        print(f"{r['op']:8} {r['n']:>6}x{r['k']:<6} {r['bf16_us']:8.1f} {r['awq_default_us']:8.1f} "
              f"{r['awq_best_us']:8.1f} {r['awq_best_tbs']:6.2f} {r['speedup_best']:6.2f}  {r['best_config']}")


if __name__ == "__main__":
    main()
