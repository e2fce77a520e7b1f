"""Batch-1 AWQ GEMV: the tensor-core CUDA kernel (`kernels.awq_gemv_cuda`) against the Triton one (`kernels.awq_gemv`).

    python bench/awq_cuda_bench.py [--model bench/models/llama-3.1-8b] [--quick]

Per projection of the model's shape, with the prologue / epilogue the engine's decode step gives it (qkv and
gate_up RMSNorm, o + residual, down SiLU-and-mul + residual): microseconds per call inside a CUDA graph, cycling
over enough weight copies to miss L2; effective TB/s of the int4 + scale + zero bytes; max error of each against
the fp32 reference (the prologue rounded as the unfused ops round, then x @ dequantized W); for the mma kernel
every config of the sweep. The last lines add the best of each up over one layer and project the step's GEMV
time over all layers.
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

from bench.awq_bench import DTYPE, GROUP, _awq_copy  # noqa: E402
from bench.gemv_bench import shapes  # noqa: E402
from bench.kernels_bench import bench_us  # noqa: E402
from engine.quant.awq import dequantize_awq  # noqa: E402
from kernels import awq_gemv_cuda as awq_gemv_cuda_module  # noqa: E402
from kernels.awq_gemm import awq_dequantize, awq_gemm  # noqa: E402
from kernels.awq_gemv import awq_gemv, gemv_locks  # noqa: E402
from kernels.awq_gemv_cuda import (  # noqa: E402
    AwqCudaConfig,
    awq_gemm_cuda,
    awq_gemv_cuda,
    default_config,
    repack_awq_for_cuda,
)

SMALL_CHAINS_DEFAULT = awq_gemv_cuda_module.SMALL_CHAINS


def prologue_ref(x: torch.Tensor, mode: str, gamma: torch.Tensor, eps: float) -> torch.Tensor:
    if mode.startswith("rms"):
        rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
        return ((x.float() * rstd).to(DTYPE).float() * gamma.float()).to(DTYPE)
    if mode.startswith("silu"):
        gate, up = x.float().chunk(2, dim=-1)
        return (F.silu(gate).to(DTYPE).float() * up).to(DTYPE)
    return x


def engine_inputs(mode: str, n: int, k: int):
    """(x, gamma, residual, GEMV kwargs) for one projection as the decode step calls it: `mode` rms (qkv,
    gate_up), res (o), silu_res (down); bf16 on the GPU."""
    width = 2 * k if mode.startswith("silu") else k
    x = (torch.randn(1, width, device="cuda") * 2).to(DTYPE)
    gamma = (torch.rand(k, device="cuda") + 0.5).to(DTYPE)
    residual = torch.randn(1, n, device="cuda").to(DTYPE) if mode.endswith("res") else None
    kw = {"residual": residual}
    if mode.startswith("rms"):
        kw["norm_weight"] = gamma
    if mode.startswith("silu"):
        kw["silu_mul"] = True
    return x, gamma, residual, kw


def chain_variants(cfg: AwqCudaConfig) -> list[AwqCudaConfig]:
    """`cfg` with its group loop's mma chain split in 2 and 4, each with and without the early refill."""
    return [cfg._replace(split=split, early_refill=early) for split in (2, 4) for early in (False, True)]


def configs(quick: bool, n: int, k: int, chains: bool = False) -> list[AwqCudaConfig]:
    if chains:  # every (tiles, warps) of the usual range with every mma chain setting, as PDL launches
        return [AwqCudaConfig(t, w, 2, True, split, early)
                for t, w, split, early in itertools.product((1, 2), (8, 16), (1, 2, 4), (False, True))]
    if quick:
        base = default_config(n, k)._replace(split=1, early_refill=False)
        return [base, base._replace(pdl=True), *chain_variants(base._replace(pdl=True))]
    sweep = [AwqCudaConfig(t, w, d) for t, w, d in itertools.product((1, 2, 4), (8, 16), (2, 4))]
    # programmatic dependent launch of the default config: back to back in the graph, each launch's weight loads
    # overlap the previous one's tail (an upper bound for the engine, where x depends on the kernel before)
    return sweep + [default_config(n, k)._replace(pdl=True), *chain_variants(default_config(n, k)._replace(pdl=True))]


def bench_shape(name: str, n: int, k: int, mode: str, quick: bool, chains: bool = False) -> dict:
    awq_bytes = k * n // 2 + (k // GROUP) * n * 2.5
    copies = max(2, math.ceil((256 << 20) / awq_bytes))
    awq = [_awq_copy(k, n) for _ in range(copies)]
    mma = [repack_awq_for_cuda(*w, GROUP) for w in awq]
    x, gamma, residual, kw = engine_inputs(mode, n, k)
    ref = prologue_ref(x, mode, gamma, 1e-6).float() @ dequantize_awq(*awq[0], GROUP).float()
    if residual is not None:
        ref = (ref.to(DTYPE).float() + residual.float())
    ref = ref.squeeze(0)
    row = {"op": name, "n": n, "k": k, "mode": mode, "ref_absmax": round(ref.abs().max().item(), 4)}
    locks = gemv_locks(n, x.device)
    row["triton_err"] = (awq_gemv(x, *awq[0], GROUP, locks=locks, **kw).float().squeeze(0) - ref).abs().max().item()
    row["triton_us"] = round(bench_us(lambda: [awq_gemv(x, *w, GROUP, locks=locks, **kw) for w in awq],
                                      calls_per_graph=1) / len(awq), 2)
    best = None
    for cfg in configs(quick, n, k, chains):
        key = (f"mma_{cfg.tiles}_{cfg.warps}_{cfg.depth}{'_pdl' if cfg.pdl else ''}"
               f"{f'_s{cfg.split}' if cfg.split > 1 else ''}{'e' if cfg.early_refill else ''}")
        try:
            row[f"{key}_err"] = (awq_gemv_cuda(x, mma[0], cfg, **kw).float().squeeze(0) - ref).abs().max().item()
            row[f"{key}_us"] = round(bench_us(lambda cfg=cfg: [awq_gemv_cuda(x, w, cfg, **kw) for w in mma],
                                              calls_per_graph=1) / len(mma), 2)
        except Exception as exc:  # noqa: BLE001 - a config that fails is reported, the others still run
            row[f"{key}_error"] = str(exc).splitlines()[0][:200]
            continue
        if best is None or row[f"{key}_us"] < row[f"{best}_us"]:
            best = key
    row["mma_best"] = best
    for key in [k_ for k_ in row if k_.endswith("_us")]:
        row[key.removesuffix("_us") + "_tbs"] = round(awq_bytes / row[key] / 1e6, 3)
    return row


def bench_rows(name: str, n: int, k: int, rows: list[int], small_splits: list[int] | None = None) -> dict:
    """Small batches (no prologue): `awq_gemm_cuda` (8 rows per weight pass) against the Triton GEMM and
    dequantize + cuBLAS, us per call; max error of the CUDA kernel against the fp32 reference. With
    `small_splits`: the CUDA kernel only, once per split of every shape class
    (`awq_gemv_cuda.SMALL_CHAINS`; cuda_{m}_s{split}_us)."""
    awq_bytes = k * n // 2 + (k // GROUP) * n * 2.5
    copies = max(2, math.ceil((256 << 20) / awq_bytes))
    awq = [_awq_copy(k, n) for _ in range(copies)]
    mma = [repack_awq_for_cuda(*w, GROUP) for w in awq]
    locks = gemv_locks(n, "cuda")
    row = {"op": name, "n": n, "k": k}
    for m in rows:
        x = torch.randn(m, k, device="cuda").to(DTYPE)
        ref = x.float() @ dequantize_awq(*awq[0], GROUP).float()
        if small_splits:
            for split in small_splits:
                awq_gemv_cuda_module.SMALL_CHAINS = awq_gemv_cuda_module.parse_chains(str(split))
                row[f"cuda_{m}_s{split}_err"] = (awq_gemm_cuda(x, mma[0]).float() - ref).abs().max().item()
                row[f"cuda_{m}_s{split}_us"] = round(bench_us(lambda x=x: [awq_gemm_cuda(x, w) for w in mma],
                                                              calls_per_graph=1) / len(mma), 2)
            awq_gemv_cuda_module.SMALL_CHAINS = SMALL_CHAINS_DEFAULT
            continue
        row[f"cuda_{m}_err"] = (awq_gemm_cuda(x, mma[0]).float() - ref).abs().max().item()
        row[f"cuda_{m}_us"] = round(bench_us(lambda x=x: [awq_gemm_cuda(x, w) for w in mma], calls_per_graph=1)
                                    / len(mma), 2)
        row[f"triton_{m}_us"] = round(bench_us(lambda x=x: [awq_gemm(x, *w, GROUP, locks=locks) for w in awq],
                                               calls_per_graph=1) / len(awq), 2)
        row[f"dequant_{m}_us"] = round(bench_us(lambda x=x: [x @ awq_dequantize(*w, GROUP) for w in awq[:2]],
                                                calls_per_graph=1) / 2, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--rows", default="", help="comma-separated batch sizes: time awq_gemm_cuda against the "
                        "Triton GEMM and dequantize + cuBLAS instead of the batch-1 sweep (e.g. 2,4,8,16,64)")
    parser.add_argument("--quick", action="store_true", help="the default config with and without PDL, and its split mma chains, instead of the sweep")
    parser.add_argument("--chains", action="store_true", help="sweep tiles 1-2 x warps 8-16 x every mma chain "
                        "setting (split 1, 2, 4; early refill or not) instead")
    parser.add_argument("--small-splits", default="", help="with --rows: time only the CUDA kernel, once per "
                        "comma-separated split (1, 2, 4: mma chains of one-column-group launches, every shape class)")
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("awq_cuda_bench.py: needs a CUDA GPU")
    print(json.dumps({"device": torch.cuda.get_device_name()}))
    if ns.rows and ns.small_splits:
        sizes, splits = [int(v) for v in ns.rows.split(",")], [int(v) for v in ns.small_splits.split(",")]
        for name, n, k, _ in shapes(ns.model):
            if name != "lm_head":
                r = bench_rows(name, n, k, sizes, splits)
                print("AWQ_ROWS " + json.dumps(r), flush=True)
                for m in sizes:
                    print(f"{name:8} {m:5d} " + " ".join(f"s{s_}={r[f'cuda_{m}_s{s_}_us']:.2f}" for s_ in splits))
        return
    if ns.rows:
        sizes = [int(v) for v in ns.rows.split(",")]
        print(f"{'op':8} {'rows':>5} {'cuda us':>9} {'triton us':>10} {'dequant us':>11} {'cuda err':>9}")
        for name, n, k, _ in shapes(ns.model):
            if name != "lm_head":
                r = bench_rows(name, n, k, sizes)
                print("AWQ_ROWS " + json.dumps(r), flush=True)
                for m in sizes:
                    print(f"{name:8} {m:5d} {r[f'cuda_{m}_us']:9.2f} {r[f'triton_{m}_us']:10.2f} "
                          f"{r[f'dequant_{m}_us']:11.2f} {r[f'cuda_{m}_err']:9.3g}")
        return
    rows = []
    for name, n, k, mode in shapes(ns.model):
        if name == "lm_head":
            continue
        row = bench_shape(name, n, k, mode, ns.quick, ns.chains)
        print("AWQ_MMA " + json.dumps(row), flush=True)
        for key in [k_.removesuffix("_us") for k_ in row if k_.startswith("mma_") and k_.endswith("_us")]:
            print(f"  {name:8} {key:28} {row[key + '_us']:8.2f} us {row[key + '_tbs']:6.3f} TB/s "
                  f"err {row.get(key + '_err', float('nan')):.3g}", flush=True)
        rows.append(row)
    print(f"{'op':8} {'triton us':>10} {'TB/s':>6} {'err':>8} | {'mma best':>14} {'us':>8} {'TB/s':>6} {'err':>8}")
    for r in rows:
        b = r["mma_best"]
        print(f"{r['op']:8} {r['triton_us']:10.2f} {r['triton_tbs']:6.2f} {r['triton_err']:8.3g} | {b or '-':>14} "
              f"{r.get(f'{b}_us', float('nan')):8.2f} {r.get(f'{b}_tbs', 0):6.2f} {r.get(f'{b}_err', float('nan')):8.3g}")
    layers = json.loads(Path(ns.model, "config.json").read_text())["num_hidden_layers"]
    tri = sum(r["triton_us"] for r in rows)
    mma = sum(r.get(f"{r['mma_best']}_us", float("nan")) for r in rows)
    print(f"per layer: triton {tri:.1f} us, mma {mma:.1f} us; x {layers} layers: {tri * layers / 1e3:.3f} vs "
          f"{mma * layers / 1e3:.3f} ms per token")


if __name__ == "__main__":
    main()
