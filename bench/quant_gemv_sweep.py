"""Fast per-device tile sweep for the quantized batch-1 GEMVs (< 60 s each on an H200, compile included):

    python bench/quant_gemv_sweep.py --kind fp8 [--out $OUT/fp8_gemv_tuned.json]
    python bench/quant_gemv_sweep.py --kind awq [--out $OUT/awq_gemv_tuned.json]
    python bench/quant_gemv_sweep.py --kind fp8,awq   # both, one parallel precompile: $OUT/{fp8,awq}_gemv_tuned.json

For each decoder projection of the model (Llama-3.1-8B: qkv 6144x4096, o 4096x4096, gate_up 28672x4096,
down 4096x14336), with the operands the engine passes (FP8: the fused path's RMSNorm / SiLU prologue and
residual epilogue; AWQ: the plain `awq_gemv` with per-layer split-K counters):
1. <= 16 candidate tiles per shape (`fp8_candidates` / `awq_candidates`; the kernel's default first) are
   compiled in parallel spawned processes (they fill Triton's on-disk cache; the timing loop only loads);
2. each is checked against the default tiles' output and timed from a CUDA graph that cycles through
   enough weight copies to miss L2 (CUDA events, median of 3 trials);
3. the 3 fastest and the default are re-timed interleaved; a tile replaces the default only if it is more
   than `MIN_GAIN` faster.
Writes `--out` in the format of `kernels.quant_gemv_configs` FP8_TUNED / AWQ_TUNED (paste it there, or point
TESSERA_FP8_GEMV_TUNED / TESSERA_AWQ_GEMV_TUNED at it). `--kind awq` also times `awq_gemm` against
dequantize + cuBLAS at a few row counts and writes the smallest count from which dequantize + cuBLAS wins
to `awq_dequant_min_rows.txt` beside `--out` (for TESSERA_AWQ_DEQUANT_MIN_ROWS, see engine/quant/awq.py).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gemv_bench import shapes  # noqa: E402
from bench.gemv_sweep import graph_of, time_graph_us  # noqa: E402  (the bf16 sweep's CUDA-graph timing)
from bench.gemv_sweep import relative_diff as _rel_diff  # noqa: E402
from kernels.awq_gemv import AwqGemvConfig  # noqa: E402
from kernels.fp8_gemv import Fp8GemvConfig  # noqa: E402
from kernels.fp8_gemv import default_config as fp8_default_config  # noqa: E402
from kernels.quant_gemv_configs import AWQ_TUNED, FP8_TUNED  # noqa: E402

DTYPE = torch.bfloat16
GROUP = 128
L2_BYTES = 256 << 20
MAX_CONFIGS = 16  # x 4 shapes x 2 kinds: ~130 compiles, ~25 s on 14 cores
MIN_GAIN = 0.015
LAUNCHES = 40
FINALISTS = 3
PREFILL_ROWS = (64, 256, 512)
DEVICE = "cuda"  # the CPU smoke test (tests/unit/test_quant_gemv_sweep.py) runs the logic on "cpu"

# FP8 (block_n, block_k, num_warps, num_stages, split_k). An fp8 tile moves half the bytes of a bf16 tile
# of the same shape, but the prologue (RMSNorm / SiLU of x, ~8 ops per x element) costs the same per
# element, and each thread redoes it for every K column it holds: more rows per thread (block_n /
# num_warps) amortise it, which matters twice as much per weight byte as in bf16.
# In priority order (the list is cut at MAX_CONFIGS): more rows per thread first.
FP8_SHORT_K = [(16, 1024, 8, 1, 1), (16, 512, 4, 2, 1), (32, 512, 8, 1, 1), (16, 1024, 4, 1, 1),
               (8, 1024, 4, 2, 1), (32, 256, 4, 2, 1), (8, 1024, 8, 1, 1), (16, 1024, 8, 2, 1),
               (4, 1024, 4, 2, 1), (16, 2048, 8, 1, 1), (32, 512, 4, 1, 1)]
FP8_LONG_K = [(16, 1024, 8, 2, 1), (16, 512, 4, 3, 1), (32, 512, 8, 2, 1), (8, 1024, 4, 2, 1),
              (16, 1024, 4, 2, 1), (32, 256, 4, 3, 1), (8, 2048, 8, 2, 1), (16, 512, 8, 3, 1),
              (8, 1024, 8, 2, 1), (16, 1024, 8, 3, 1)]
FP8_SPLIT = [(16, 1024, 8, 1, 2), (8, 1024, 4, 1, 2), (32, 512, 8, 1, 2)]
# The tensor-core variant (use_dot=1; see Fp8GemvConfig): weight tiles >= 16 rows, software-pipelined so the
# fp8 tile lands in shared memory (cp.async) and reaches the mma without a CUDA-core fp32 conversion.
# Few output rows need split-K to fill 132 SMs with 32-64-row tiles.
FP8_DOT_SMALL_N = [(32, 256, 4, 3, 1, 1), (32, 256, 4, 3, 2, 1), (64, 256, 4, 3, 2, 1), (64, 128, 4, 4, 4, 1),
                   (16, 512, 4, 3, 1, 1), (32, 512, 4, 2, 2, 1)]
# The lean loop (lean = chunks per iteration; see kernels/fp8_gemv_lean.py; 2026-12-03 ninth session, from sm_90
# SASS, bench/NOTES.md): no bar.sync or shared memory in the K loop, 3.1-3.5 SASS instructions per weight
# (4.1 with SiLU) against 3.6-7.5 for the tuned tiles, 128-256 weight bytes requested per thread per iteration.
# block_k = 256 x num_warps is its barrier-free tile. (block_n, block_k, num_warps, split_k, lean). N <= 8192 with
# 16-row tiles fills only ~2 of 4 CTA slots per SM: hence the split-K and the 8-row entries.
# Each list starts with (8, 1024, 4, 1, 3), the one second-round tile (tenth session) that won a shape (down).
FP8_LEAN_SHORT_K = [(8, 1024, 4, 1, 3), (16, 1024, 4, 1, 1), (16, 1024, 4, 1, 2), (8, 1024, 4, 1, 4),
                    (8, 1024, 4, 1, 2), (16, 1024, 4, 2, 1)]
FP8_LEAN_LONG_K = [(8, 1024, 4, 1, 3), (16, 1024, 4, 1, 1), (16, 1024, 4, 2, 1), (16, 1024, 4, 1, 2),
                   (32, 1024, 4, 2, 1), (8, 1024, 4, 1, 4)]
FP8_LEAN_LARGE_N = [(8, 1024, 4, 1, 3), (16, 1024, 4, 1, 1), (16, 1024, 4, 1, 2), (32, 1024, 4, 1, 1),
                    (8, 1024, 4, 1, 4)]
# The ring loop (nineteenth session): (block_n, block_k, num_warps, ring slots), block_k = 256 x num_warps.
FP8_RING = [(8, 1024, 4, 1), (8, 1024, 4, 2), (16, 1024, 4, 1), (4, 1024, 4, 2), (16, 1024, 4, 2)]
FP8_DOT_LARGE_N = [(64, 256, 4, 3, 1, 1), (128, 128, 4, 3, 1, 1), (32, 256, 4, 3, 1, 1), (32, 512, 4, 2, 1, 1),
                   (16, 512, 4, 3, 1, 1), (64, 128, 4, 4, 1, 1)]
# AWQ's older loop (planes=0): (block_n, block_k, num_warps, split_k or None = auto ~4 programs per SM, num_stages).
AWQ_TILES = [(128, 64, 4, None, 3), (256, 64, 8, None, 3), (128, 32, 4, None, 3), (512, 32, 8, None, 3),
             (256, 32, 8, None, 3), (128, 128, 8, None, 3), (64, 64, 4, None, 3), (256, 32, 4, None, 2),
             (128, 32, 4, 8, 3), (256, 32, 4, 8, 3), (512, 64, 8, None, 3)]
# AWQ through `awq_gemm` with a 16-row tile (use_gemm=1): (block_n, block_k, num_warps, split_k, num_stages).
AWQ_GEMM_TILES = [(64, 64, 4, None, 3), (128, 64, 4, None, 3), (64, 128, 4, None, 3), (128, 128, 4, None, 2),
                  (64, 64, 4, 4, 3)]
# The nibble-plane loop (planes=1, the default since it won every shape on an H200 on 2026-12-03; see
# kernels/awq_gemv.py): (block_n, block_k, num_warps, split_k). Each thread holds 16 fp32 tiles of
# block_k x block_n / 8 / threads values (8 planes x group sum + total), so tiles stay small.
AWQ_PLANE_TILES = [(256, 16, 4, None), (512, 16, 8, None), (128, 16, 4, None), (256, 32, 8, None),
                   (128, 32, 4, None), (256, 16, 4, 8)]

# The lean nibble-plane loop (lean=1, 2026-12-03 eighth session, from its sm_90 SASS: no bar.sync in the group
# loop, one LOP3 per weight, 3 chunk loads ahead; 6.56 -> 4.36 SASS instructions per weight at the default
# tile): (block_n, block_k, num_warps, split_k). Not yet timed on a GPU.
AWQ_LEAN_TILES = [(128, 16, 4, None), (256, 16, 4, None), (128, 32, 4, None), (512, 16, 8, None),
                  (256, 32, 8, None)]
# The tensor-core loop (mma=1, `kernels.awq_mma`; 2026-12-03 ninth session, prepared from sm_90 SASS, bench/NOTES.md
# "AWQ tensor-core GEMV"): 2.0-2.8 SASS instructions per weight against the lean loop's 4.3-4.7, no spills.
# (block_n, block_k, num_warps, num_stages): the fewest instructions per weight first (256,64,4: 8 warps/SM), the
# same pipelined (num_stages=2: weights by cp.async through shared memory, a chunk more in flight; 12 warps/SM),
# then tiles with more warps per SM (256,32,4: 12; 128,128,4 and 256,128,8: 16). H200 (tenth session): correct, but
# it won only o (128,128,4, within 1.5 % of the lean tile) and lost the rest (gate_up 55.7 vs 39.1 us).
AWQ_MMA_TILES = [(256, 64, 4, 1), (256, 64, 4, 2), (256, 32, 4, 1), (128, 128, 4, 1), (256, 128, 8, 1),
                 (128, 64, 4, 1)]


def fp8_candidates(n: int, k: int, device: torch.device | None = None) -> list[Fp8GemvConfig]:
    """The default first (what runs without an overlay), the tables' tuned tiles for this shape (what the
    new tiles must beat), then one-pass tiles, then split-K for few rows."""
    tiles = FP8_SHORT_K if k <= 8192 else FP8_LONG_K
    out = [fp8_default_config(n, k, device or torch.device(DEVICE))] + [Fp8GemvConfig(*t) for t in tiles]
    dot = FP8_DOT_LARGE_N if n > 8192 else FP8_DOT_SMALL_N
    lean = FP8_LEAN_LARGE_N if n > 8192 else FP8_LEAN_SHORT_K if k <= 8192 else FP8_LEAN_LONG_K
    tuned = [Fp8GemvConfig(**table[f"{n}x{k}"]) for table in FP8_TUNED.values() if f"{n}x{k}" in table]
    # Tuned, lean and tensor-core tiles go right after the default, in that order: the incumbents and the
    # structural bets. MAX_CONFIGS cuts the list's tail (the plain one-pass tiles). (The tenth session's FP8 x
    # FP8 wgmma loop, commit d3c37f1, tied the lean loop on gate_up, lost 30-45 % elsewhere on an H200 and was
    # removed; so were the integer-pipe e4m3 loops, which lost 2-5x.)
    ring = [Fp8GemvConfig(bn, bk, w, ring=r) for bn, bk, w, r in FP8_RING]
    out[1:1] = (tuned + ring + [Fp8GemvConfig(bn, bk, w, split_k=s, lean=u) for bn, bk, w, s, u in lean[:4]]
                + [Fp8GemvConfig(*t) for t in dot[:3]])
    if n <= 8192:
        out += [Fp8GemvConfig(*t) for t in FP8_SPLIT]
    return list(dict.fromkeys(out))[:MAX_CONFIGS]


def awq_candidates(n: int, k: int) -> list[AwqGemvConfig]:
    """The default first, then the shape's AWQ_TUNED tile (the incumbent), the tensor-core tiles, then the lean
    and plain nibble-plane tiles (MAX_CONFIGS cuts the tail), then the mma route and the older loop's
    tiles."""
    tuned = [AwqGemvConfig(**table[f"{n}x{k}"]) for table in AWQ_TUNED.values() if f"{n}x{k}" in table]
    mma = [AwqGemvConfig(bn, bk, w, None, stages, mma=1) for bn, bk, w, stages in AWQ_MMA_TILES]
    lean = [AwqGemvConfig(bn, bk, w, split, 1, planes=1, lean=1) for bn, bk, w, split in AWQ_LEAN_TILES]
    planes = [AwqGemvConfig(bn, bk, w, split, 1, planes=1) for bn, bk, w, split in AWQ_PLANE_TILES]
    gemm = [AwqGemvConfig(*t, use_gemm=1) for t in AWQ_GEMM_TILES]
    older = [AwqGemvConfig(*t, planes=0) for t in AWQ_TILES]
    return list(dict.fromkeys([AwqGemvConfig(), *tuned, *mma, *lean, *planes, *gemm, *older]))[:MAX_CONFIGS]


def candidates(kind: str, n: int, k: int) -> list:
    return fp8_candidates(n, k) if kind == "fp8" else awq_candidates(n, k)


# ---- operands and launches ----

class Case:
    """One projection's weight copies (enough to miss L2) and its launch, as the engine makes it."""

    def __init__(self, kind: str, n: int, k: int, prologue: str, copies: int | None = None) -> None:
        self.kind, self.n, self.k, self.prologue = kind, n, k, prologue
        dev = DEVICE
        self.nbytes = n * k if kind == "fp8" else n * k // 2 + (k // GROUP) * n * 2 + (k // GROUP) * n // 2
        self.copies = copies or max(2, math.ceil(L2_BYTES / self.nbytes))
        if kind == "fp8":
            from kernels.fp8_quant import quantize_weight_per_channel

            self.weights = []
            for _ in range(self.copies):
                self.weights.append(quantize_weight_per_channel(
                    (torch.randn(n, k, device=dev) * 0.02).to(DTYPE)))
            self.x = (torch.randn(1, 2 * k if prologue == "silu_res" else k, device=dev)).to(DTYPE)
            self.kw: dict = {}
            if prologue == "rms":
                self.kw.update(norm_weight=(1 + 0.02 * torch.randn(k, device=dev)).to(DTYPE), eps=1e-5)
            else:
                self.kw.update(residual=torch.randn(1, n, device=dev).to(DTYPE), silu_mul=prologue == "silu_res")
            self.out = torch.empty(1, n, device=dev, dtype=DTYPE)
        else:
            from kernels.awq_gemv import gemv_locks

            def rand_i32(*shape: int) -> torch.Tensor:
                return torch.randint(-2**31, 2**31 - 1, shape, dtype=torch.int32, device=dev)

            self.weights = [(rand_i32(k, n // 8), rand_i32(k // GROUP, n // 8),
                             (torch.rand(k // GROUP, n, device=dev) * 1e-3).to(DTYPE)) for _ in range(self.copies)]
            self.x = torch.randn(1, k, device=dev).to(DTYPE)
            self.locks = gemv_locks(n, torch.device(dev))

    def call(self, i: int, cfg) -> torch.Tensor:
        if self.kind == "fp8":
            from kernels.fp8_gemv import fp8_gemv

            q, s = self.weights[i]
            return fp8_gemv(self.x, q, s, None, out=self.out, config=cfg, **self.kw)
        from kernels.awq_gemv import awq_gemv

        return awq_gemv(self.x, *self.weights[i], GROUP, config=cfg, locks=self.locks)


# ---- parallel precompile ----

_worker_cases: dict = {}


def _compile_one(item: tuple) -> str | None:
    kind, n, k, prologue, cfg = item
    try:
        key = (kind, n, k, prologue)
        if key not in _worker_cases:
            _worker_cases[key] = Case(kind, n, k, prologue, copies=1)
        config = Fp8GemvConfig(*cfg) if kind == "fp8" else AwqGemvConfig(*cfg)
        _worker_cases[key].call(0, config)
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # noqa: BLE001 - reported; the timing loop hits it again and skips the tile
        return f"{n}x{k} {cfg}: {str(exc).splitlines()[0][:160]}"


def precompile(items: list[tuple], jobs: int, timeout_s: float = 40) -> None:
    """Best effort: whatever does not finish in time compiles in the timing loop instead."""
    if jobs <= 1 or not items:
        return
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    pending: set = set()
    try:
        futures = [pool.submit(_compile_one, item) for item in items]
        done, pending = wait(futures, timeout=timeout_s)
        errors = [f.result() for f in done if f.exception() is None and f.result()]
        crashed = [str(f.exception())[:160] for f in done if f.exception() is not None]
        print(json.dumps({"precompile": len(items), "jobs": jobs, "done": len(done), "pending": len(pending),
                          "errors": errors[:5], "crashed": crashed[:3], "s": round(time.perf_counter() - t0, 1)}),
              flush=True)
    except Exception as exc:  # noqa: BLE001 - the sweep still runs, compiling serially
        print(json.dumps({"precompile_failed": str(exc)[:200]}), flush=True)
    finally:
        pool.shutdown(wait=not pending, cancel_futures=True)


# ---- timing ----

def sweep_shape(case: Case, name: str, cands: list) -> dict:
    default = cands[0]
    base = case.call(0, default).clone()
    rows, graphs = [], {}
    for cfg in cands:
        try:
            diff = _rel_diff(case.call(0, cfg), base)
            graph = graph_of([lambda i=i, c=cfg: case.call(i, c) for i in range(case.copies)])
            us = time_graph_us(graph, case.copies, LAUNCHES)
        except Exception as exc:  # noqa: BLE001 - a tile that does not compile is skipped, loudly
            print(json.dumps({"op": name, "config": cfg._asdict(), "error": str(exc).splitlines()[0][:160]}))
            continue
        ok = diff < 1e-2
        row = {"op": name, "config": cfg._asdict(), "us": round(us, 2),
               "gbs": round(case.nbytes / us / 1e3, 1), "rel_diff": diff, "ok": ok}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if ok:
            graphs[cfg] = graph
    if default not in graphs:
        return {"op": name, "n": case.n, "k": case.k, "error": "default tile failed", "rows": rows}
    ranked = sorted((r for r in rows if r["ok"]), key=lambda r: r["us"])
    by_dict = {tuple(c._asdict().items()): c for c in graphs}
    finalists = list(dict.fromkeys([default] + [by_dict[tuple(r["config"].items())] for r in ranked[:FINALISTS]]))
    final: dict = {c: [] for c in finalists}
    for _ in range(3):  # interleaved: clock or thermal drift hits every finalist alike
        for cfg in final:
            final[cfg].append(time_graph_us(graphs[cfg], case.copies, 3 * LAUNCHES))
    final_us = {cfg: statistics.median(v) for cfg, v in final.items()}
    best = min(final_us, key=final_us.get)
    if best != default and final_us[best] > final_us[default] * (1 - MIN_GAIN):
        best = default
    graphs.clear()
    return {"op": name, "n": case.n, "k": case.k, "gb": case.nbytes / 1e9, "default_us": final_us[default],
            "best_us": final_us[best], "best_config": best._asdict(), "rows": rows}


def awq_prefill_crossover(todo: list[tuple[str, int, int, str]]) -> dict:
    """awq_gemm vs dequantize + cuBLAS per row count (summed over the layer's projections)."""
    from kernels.awq_gemm import awq_dequantize, awq_gemm
    from kernels.awq_gemv import gemv_locks

    totals = {m: {"awq_gemm_us": 0.0, "dequant_matmul_us": 0.0} for m in PREFILL_ROWS}
    for name, n, k, _ in todo:
        case = Case("awq", n, k, "", copies=1)
        packed = (*case.weights[0], GROUP)
        locks = gemv_locks(n, torch.device(DEVICE))
        for m in PREFILL_ROWS:
            x = torch.randn(m, k, device=DEVICE).to(DTYPE)
            # awq_gemm's int4 -> bf16 trick is checked here on the device (the interpreter's bf16 math is off).
            diff = _rel_diff(awq_gemm(x, *packed, locks=locks), x.float() @ awq_dequantize(*packed).float())
            print(json.dumps({"op": name, "m": m, "awq_gemm_rel_diff": diff,
                              "ok": diff < 1e-2 or "MISMATCH: awq_gemm is wrong"}), flush=True)
            calls = (("awq_gemm_us", lambda x=x, p=packed, lk=locks: awq_gemm(x, *p, locks=lk)),
                     ("dequant_matmul_us", lambda x=x, p=packed: x @ awq_dequantize(*p)))
            for label, fn in calls:
                try:
                    us = time_graph_us(graph_of([fn]), 1, 20)
                except Exception as exc:  # noqa: BLE001
                    print(json.dumps({"op": name, "m": m, label: "error", "msg": str(exc).splitlines()[0][:160]}))
                    us = math.inf
                totals[m][label] += us
                print(json.dumps({"op": name, "m": m, label: round(us, 1)}), flush=True)
        del case
        torch.cuda.empty_cache()
    # Smallest row count from which dequantize + cuBLAS wins at every larger tested count too.
    min_rows = None
    for m in sorted(PREFILL_ROWS, reverse=True):
        if totals[m]["dequant_matmul_us"] < totals[m]["awq_gemm_us"]:
            min_rows = m
        else:
            break
    return {"per_rows": {str(m): {k: round(v, 1) for k, v in t.items()} for m, t in totals.items()},
            "dequant_min_rows": min_rows}


def _write_atomic(path: Path, text: str) -> None:
    """A sweep killed by its stage's time limit must not leave a half-written overlay behind."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sweep_kind(kind: str, todo: list[tuple[str, int, int, str]], out: Path, dev: str, prefill: bool) -> None:
    from kernels.gemv_configs import shape_key

    t0 = time.perf_counter()
    results, tuned = [], {dev: {}}
    for name, n, k, pro in todo:
        case = Case(kind, n, k, pro)
        results.append(sweep_shape(case, name, candidates(kind, n, k)))
        del case
        torch.cuda.empty_cache()
        if "best_config" in results[-1]:
            # Written after every shape: a sweep cut short by its time limit still leaves its winners so far.
            tuned[dev][shape_key(n, k)] = results[-1]["best_config"]
            _write_atomic(out, json.dumps(tuned, indent=1) + "\n")
    ok = [r for r in results if "best_config" in r]
    print(f"\n{kind} {dev}: default tiles vs sweep winner (re-timed, median)")
    total_default = total_best = 0.0
    for r in ok:
        total_default += r["default_us"]
        total_best += r["best_us"]
        print(f"{r['op']:8} {r['n']:>6}x{r['k']:<6} default {r['default_us']:8.2f} us "
              f"{r['gb'] / r['default_us'] * 1e6:6.0f} GB/s | best {r['best_us']:8.2f} us "
              f"{r['gb'] / r['best_us'] * 1e6:6.0f} GB/s  {r['best_config']}")
    if ok:
        print(f"{kind} layer projections: default {total_default:.1f} us, swept {total_best:.1f} us "
              f"(x{total_default / total_best:.3f})", flush=True)
    summary = {"kind": kind, "device": dev, "sweep_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps({"tuned": tuned, **summary}), flush=True)
    if kind == "awq" and prefill:
        summary["prefill"] = awq_prefill_crossover(todo)
        print(json.dumps({"awq_prefill": summary["prefill"]}), flush=True)
        if summary["prefill"]["dequant_min_rows"] is not None:
            _write_atomic(out.with_name("awq_dequant_min_rows.txt"), f"{summary['prefill']['dequant_min_rows']}\n")
    _write_atomic(out.with_name(f"{kind}_gemv_sweep.json"), json.dumps({**summary, "shapes": results}, indent=1))
    print(f"wrote {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="fp8", help="fp8, awq, or fp8,awq (one precompile pool for both)")
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--out", default=None, help="overlay file (one kind); default $OUT/<kind>_gemv_tuned.json")
    parser.add_argument("--jobs", type=int, default=min(14, max(1, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--ops", default="", help="comma-separated subset of qkv,o,gate_up,down,lm_head "
                        "(default: all but lm_head)")
    parser.add_argument("--no-prefill", action="store_true", help="awq: skip the awq_gemm vs dequant timing")
    args = parser.parse_args()
    from kernels.gemv_configs import device_key

    kinds = [k for k in args.kind.split(",") if k]
    assert kinds and set(kinds) <= {"fp8", "awq"}, f"--kind: fp8, awq or fp8,awq, got {args.kind!r}"
    assert args.out is None or len(kinds) == 1, "--out names one kind's file"
    torch.manual_seed(0)
    t0 = time.perf_counter()
    dev = device_key(torch.cuda.current_device())
    ops = [o for o in args.ops.split(",") if o]
    # The LM head only when named (--ops lm_head): it is 16-bit unless --lm-head-quantization fp8.
    todo = [s for s in shapes(args.model) if (s[0] in ops if ops else s[0] != "lm_head")]
    precompile([(kind, n, k, pro, tuple(c)) for kind in kinds for _, n, k, pro in todo
                for c in candidates(kind, n, k)], args.jobs)
    for kind in kinds:
        out = Path(args.out or Path(os.environ.get("OUT", "bench/out"), f"{kind}_gemv_tuned.json"))
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            sweep_kind(kind, todo, out, dev, prefill=not args.no_prefill)
        except Exception as exc:  # noqa: BLE001 - one kind failing must not cost the other its sweep
            print(json.dumps({"kind": kind, "sweep_failed": str(exc)[:300]}), flush=True)
    print(f"sweeps done in {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
