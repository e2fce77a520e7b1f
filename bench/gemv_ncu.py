"""Hardware counters of the batch-1 GEMVs (Nsight Compute): why a projection streams below the copy rate.

Each projection of the 8B shape in each weight format, with the prologue / epilogue the decode step gives it
(RMSNorm for qkv / gate_up / the head, + residual for o, SiLU-and-mul + residual for down), on the tile the engine
picks. The script compiles and warms every kernel, then launches each once between cudaProfilerStart / Stop, in the
order it prints (`PROFILED i fmt op`), so `ncu --profile-from-start off` sees exactly one launch per (format, op)
(ncu flushes the caches before each replay: weights come from DRAM, as in the decode step).

    ncu --profile-from-start off --clock-control none --set full -o gemv python3 bench/gemv_ncu.py
    python3 bench/gemv_ncu.py --summary gemv.csv     # the table below from `ncu -i gemv.ncu-rep --csv --page details`

Without ncu it runs the same launches (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (section-metric name in ncu's details page, short column name); missing ones print as "-".
COLUMNS = [
    ("Duration", "us"),
    ("DRAM Throughput", "dram%"),
    ("Memory Throughput", "mem%"),
    ("Compute (SM) Throughput", "sm%"),
    ("Registers Per Thread", "regs"),
    ("Theoretical Occupancy", "th.occ"),
    ("Achieved Occupancy", "occ"),
    ("Waves Per SM", "waves"),
    ("Issue Slots Busy", "issue%"),
    ("Warp Cycles Per Issued Instruction", "cyc/ins"),
    ("L2 Hit Rate", "l2hit"),
    ("Executed Instructions", "insts"),
]


def _launches(formats: list[str], ops: list[str]):
    """[(format, op, callable)] for every projection asked, inputs built on the GPU."""
    import torch

    from bench.awq_bench import GROUP, _awq_copy
    from bench.awq_cuda_bench import engine_inputs
    from bench.gemv_bench import shapes
    from kernels.awq_gemv_cuda import awq_gemv_cuda, repack_awq_for_cuda
    from kernels.fp8_gemv import fp8_gemv
    from kernels.fp8_quant import FP8_DTYPE
    from kernels.gemv import fused_gemv

    out = []
    for name, n, k, mode in shapes("bench/models/llama-3.1-8b"):
        if name not in ops:
            continue
        x, _gamma, _residual, kw = engine_inputs(mode, n, k)
        for fmt in formats:
            if fmt == "bf16":
                w = (torch.randn(n, k, device="cuda") * 0.02).to(torch.bfloat16)
                out.append((fmt, name, lambda x=x, w=w, kw=kw: fused_gemv(x, w, **kw)))
            elif fmt == "fp8":
                w = torch.empty(n, k, device="cuda", dtype=torch.float16).uniform_(-448, 448).to(FP8_DTYPE)
                s = torch.full((n,), 1e-4, device="cuda")
                out.append((fmt, name, lambda x=x, w=w, s=s, kw=kw: fp8_gemv(x, w, s, **kw)))
            elif fmt == "awq" and name != "lm_head":
                w = repack_awq_for_cuda(*_awq_copy(k, n), GROUP)
                out.append((fmt, name, lambda x=x, w=w, kw=kw: awq_gemv_cuda(x, w, **kw)))
    return out


def run(formats: list[str], ops: list[str]) -> None:
    import torch

    launches = _launches(formats, ops)
    for _ in range(3):  # compile and warm up outside the profiled range
        for _fmt, _op, fn in launches:
            fn()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for i, (fmt, op, fn) in enumerate(launches):
        fn()
        torch.cuda.synchronize()
        print(f"PROFILED {i} {fmt} {op}", flush=True)
    torch.cuda.cudart().cudaProfilerStop()


def summary(path: str, names: list[str]) -> None:
    """One row per profiled kernel (in launch order) with the COLUMNS metrics, then each kernel's warp stall
    reasons (cycles per issued instruction) above 0.2."""
    rows: dict[str, dict[str, str]] = {}
    order: list[str] = []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            kid = rec.get("ID", "")
            if kid not in rows:
                rows[kid] = {"kernel": rec.get("Kernel Name", "")[:40]}
                order.append(kid)
            rows[kid][rec.get("Metric Name", "")] = rec.get("Metric Value", "")
    head = f"{'#':>2} {'launch':14} " + " ".join(f"{short:>8}" for _, short in COLUMNS)
    print(head)
    for i, kid in enumerate(order):
        label = names[i] if i < len(names) else rows[kid]["kernel"]
        print(f"{i:2d} {label:14} " + " ".join(f"{rows[kid].get(m, '-')[:8]:>8}" for m, _ in COLUMNS))
    for i, kid in enumerate(order):
        stalls = {m: v for m, v in rows[kid].items() if "stall" in m.lower()}
        big = []
        for m, v in stalls.items():
            try:
                if float(v.replace(",", "")) > 0.2:
                    big.append(f"{m}={v}")
            except ValueError:
                continue
        if big:
            label = names[i] if i < len(names) else rows[kid]["kernel"]
            print(f"{label}: " + "; ".join(big))


def raw_summary(path: str, names: list[str]) -> None:
    """From `--page raw` CSV (one row per kernel, a units row first): each kernel's top warp stall reasons
    (average warps stalled per issued instruction) and its DRAM bytes."""
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    head, body = table[0], [r for r in table[2:] if len(r) == len(table[0])]
    col = {name: i for i, name in enumerate(head)}
    stall_cols = [(name[len("smsp__average_warps_issue_stalled_"):].removesuffix("_per_issue_active.ratio"), i)
                  for name, i in col.items()
                  if name.startswith("smsp__average_warps_issue_stalled_") and name.endswith("_per_issue_active.ratio")]
    for n, row in enumerate(body):
        label = names[n] if n < len(names) else row[col.get("Kernel Name", 0)][:30]

        def num(i, row=row):
            try:
                return float(row[i].replace(",", ""))
            except (ValueError, IndexError):
                return 0.0
        top = sorted(((num(i), s) for s, i in stall_cols), reverse=True)[:7]
        dram = num(col["dram__bytes_read.sum"]) if "dram__bytes_read.sum" in col else 0.0
        print(f"{label:14} dram_read={dram:.3g} " + " ".join(f"{s}={v:.2f}" for v, s in top if v > 0.05))


def source_summary(path: str, top: int = 30) -> None:
    """From `--page source --print-source sass` CSV: the SASS lines with the most warp stall samples (all kernels
    in the file, each block of lines as ncu wrote it)."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    blocks, current, header = [], [], None
    for r in lines:
        if r and any("Warp Stall Sampling (All" in c for c in r):
            header = r
            if current:
                blocks.append(current)
            current = [r]
        elif header is not None and len(r) == len(header):
            current.append(r)
        elif r:
            if current:
                blocks.append(current)
                current = []
            print("#", ",".join(r)[:160])
    if current:
        blocks.append(current)
    for block in blocks:
        header, rows = block[0], block[1:]
        samp = next(i for i, c in enumerate(header) if "Warp Stall Sampling (All" in c)
        src = next((i for i, c in enumerate(header) if c == "Source"), 1)

        def val(r, samp=samp):
            try:
                return float(r[samp].replace(",", ""))
            except ValueError:
                return 0.0
        total = sum(val(r) for r in rows) or 1.0
        print(f"--- {len(rows)} SASS lines, {total:.0f} samples")
        for r in sorted(rows, key=val, reverse=True)[:top]:
            print(f"{100 * val(r) / total:5.1f}%  {r[src][:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="bf16,fp8,awq")
    parser.add_argument("--ops", default="qkv,o,gate_up,down,lm_head")
    parser.add_argument("--summary", help="an ncu details-page CSV to summarise instead of launching")
    parser.add_argument("--raw", help="an ncu raw-page CSV: stall reasons per kernel")
    parser.add_argument("--source", help="an ncu source-page CSV (SASS): the lines with the most stall samples")
    parser.add_argument("--names", default="", help="labels for the summary rows, comma-separated, launch order")
    ns = parser.parse_args()
    names = [v for v in ns.names.split(",") if v]
    if ns.summary or ns.raw or ns.source:
        if ns.summary:
            summary(ns.summary, names)
        if ns.raw:
            raw_summary(ns.raw, names)
        if ns.source:
            source_summary(ns.source)
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("gemv_ncu.py: needs a CUDA GPU")
    run(ns.formats.split(","), ns.ops.split(","))


if __name__ == "__main__":
    main()
