"""Batch-1 FP8 GEMV: the tensor-core CUDA kernel (`kernels.fp8_gemv_cuda`) against the Triton one (`kernels.fp8_gemv`,
its tuned tile for this device).

    python bench/fp8_cuda_bench.py [--model bench/models/llama-3.1-8b] [--quick]

Per projection of the model's shape, with the prologue / epilogue the engine's decode step gives it (qkv and
gate_up RMSNorm, o + residual, down SiLU-and-mul + residual): microseconds per call inside a CUDA graph, cycling
over enough weight copies to miss L2; TB/s of the e4m3 weight bytes; max error of each against the fp32
reference (the prologue rounded as the unfused ops round, then x @ dequantized W); for the CUDA kernel every
config of the sweep (`--quick`: the default only). The last lines add the best of each up over one layer and
project the step's GEMV time over all layers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.awq_bench import DTYPE  # noqa: E402
from bench.awq_cuda_bench import engine_inputs, prologue_ref  # noqa: E402
from bench.gemv_bench import shapes  # noqa: E402
from bench.kernels_bench import bench_us  # noqa: E402
from kernels.fp8_gemv import fp8_gemv  # noqa: E402
from kernels.fp8_gemv_cuda import Fp8CudaConfig, default_config, fp8_gemv_cuda  # noqa: E402
from kernels.fp8_quant import quantize_weight_per_channel  # noqa: E402


def configs(quick: bool, n: int, k: int) -> list[Fp8CudaConfig]:
    sweep = [] if quick else [Fp8CudaConfig(t, w, d) for t, w, d in itertools.product((1, 2, 4), (4, 8, 16), (2, 4))]
    return [default_config(n, k)] + [c for c in sweep if c != default_config(n, k)]


def bench_shape(name: str, n: int, k: int, mode: str, quick: bool) -> dict:
    copies = max(2, math.ceil((256 << 20) / (n * k)))
    weights = [quantize_weight_per_channel(torch.randn(n, k, device="cuda") * 0.02) for _ in range(copies)]
    x, gamma, residual, kw = engine_inputs(mode, n, k)
    q0, s0 = weights[0]
    ref = (prologue_ref(x, mode, gamma, 1e-6).float() @ q0.float().t()) * s0
    if residual is not None:
        ref = ref.to(DTYPE).float() + residual.float()
    ref = ref.squeeze(0)
    row = {"op": name, "n": n, "k": k, "mode": mode, "ref_absmax": round(ref.abs().max().item(), 4)}
    row["triton_err"] = (fp8_gemv(x, q0, s0, **kw).float().squeeze(0) - ref).abs().max().item()
    row["triton_us"] = round(bench_us(lambda: [fp8_gemv(x, q, s, **kw) for q, s in weights],
                                      calls_per_graph=1) / copies, 2)
    best = None
    for cfg in configs(quick, n, k):
        key = f"cuda_{cfg.tiles}_{cfg.warps}_{cfg.depth}"
        try:
            row[f"{key}_err"] = (fp8_gemv_cuda(x, q0, s0, config=cfg, **kw).float().squeeze(0) - ref).abs().max().item()
            row[f"{key}_us"] = round(bench_us(lambda cfg=cfg: [fp8_gemv_cuda(x, q, s, config=cfg, **kw)
                                                               for q, s in weights], calls_per_graph=1) / copies, 2)
        except Exception as exc:  # noqa: BLE001 - a config that fails is reported, the others still run
            row[f"{key}_error"] = str(exc).splitlines()[0][:200]
            continue
        if best is None or row[f"{key}_us"] < row[f"{best}_us"]:
            best = key
    row["cuda_best"] = best
    row["cuda_default"] = f"cuda_{default_config(n, k).tiles}_{default_config(n, k).warps}_{default_config(n, k).depth}"
    for key in [k_ for k_ in row if k_.endswith("_us")]:
        row[key.removesuffix("_us") + "_tbs"] = round(n * k / row[key] / 1e6, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--quick", action="store_true", help="the default config only instead of the 18-config sweep")
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("fp8_cuda_bench.py: needs a CUDA GPU")
    print(json.dumps({"device": torch.cuda.get_device_name()}))
    rows = []
    for name, n, k, mode in shapes(ns.model):
        if name == "lm_head":
            continue
        row = bench_shape(name, n, k, mode, ns.quick)
        print("FP8_CUDA " + json.dumps(row), flush=True)
        rows.append(row)
    print(f"{'op':8} {'triton us':>10} {'TB/s':>6} {'err':>8} | {'cuda default':>14} {'us':>8} | {'cuda best':>14} "
          f"{'us':>8} {'TB/s':>6} {'err':>8}")
    for r in rows:
        b, d = r["cuda_best"], r["cuda_default"]
        print(f"{r['op']:8} {r['triton_us']:10.2f} {r['triton_tbs']:6.2f} {r['triton_err']:8.3g} | {d:>14} "
              f"{r.get(f'{d}_us', float('nan')):8.2f} | {b or '-':>14} {r.get(f'{b}_us', float('nan')):8.2f} "
              f"{r.get(f'{b}_tbs', 0):6.2f} {r.get(f'{b}_err', float('nan')):8.3g}")
    layers = json.loads(Path(ns.model, "config.json").read_text())["num_hidden_layers"]
    tri = sum(r["triton_us"] for r in rows)
    cud = sum(r.get(f"{r['cuda_default']}_us", float("nan")) for r in rows)
    best = sum(r.get(f"{r['cuda_best']}_us", float("nan")) for r in rows)
    print(f"per layer: triton {tri:.1f} us, cuda default {cud:.1f} us, cuda best {best:.1f} us; x {layers} layers: "
          f"{tri * layers / 1e3:.3f} / {cud * layers / 1e3:.3f} / {best * layers / 1e3:.3f} ms per token")


if __name__ == "__main__":
    main()
