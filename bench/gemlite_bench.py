"""Batch-1 AWQ GEMV: GemLite's Triton kernels (pip `gemlite`) and PyTorch's int4 kernel against `kernels.awq_gemv`.

    python bench/gemlite_bench.py [--model bench/models/llama-3.1-8b]

The Triton nibble-plane GEMV streams int4 weights at 1.1-1.6 TB/s on an H200, far from the ~4 TB/s the bf16
GEMV reaches; AWQ's 2.5x target needs ~3.8. GemLite is a maintained Triton library of low-bit kernels (in
TorchAO / SGLang / vLLM) with a batch-1 "reverse split-K" GEMV. This times it on the same AutoAWQ weights,
repacked into GemLite's layout ((W_q - zeros) * scales, the AWQ formula, group 128), and into PyTorch's
`_weight_int4pack_mm` layout (inner k tiles 2 / 4 / 8), per projection:
microseconds, effective TB/s of the int4 + scales + zeros bytes, bf16 cuBLAS on the same shape, and the max
error of each against the fp32 dequantized reference. Every op cycles over enough weight copies to miss L2,
inside a CUDA graph. Prints one JSON line per shape and a table.
"""

from __future__ import annotations

import argparse
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
from engine.quant.awq import dequantize_awq, unpack_int4  # noqa: E402
from kernels.awq_gemv import awq_gemv, gemv_locks  # noqa: E402


def gemlite_from_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, fma_mode: bool):
    """A GemLite layer holding the AutoAWQ tensors' weights: W_q [N, K] uint8, zeros / scales [N, K / group]."""
    import gemlite

    k, n = qweight.shape[0], scales.shape[1]
    layer = gemlite.GemLiteLinear(4, group_size=GROUP, in_features=k, out_features=n,
                                  input_dtype=gemlite.DType.BF16, output_dtype=gemlite.DType.BF16)
    w_q = unpack_int4(qweight).t().contiguous().to(torch.uint8)
    zeros = unpack_int4(qzeros).t().contiguous().to(DTYPE)
    layer.pack(w_q, scales.t().contiguous(), zeros, bias=None, fma_mode=fma_mode)
    return layer


def tinygemm_from_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, inner_k_tiles: int):
    """PyTorch's own int4 kernel (`aten._weight_int4pack_mm`, gpt-fast's "tinygemm"): w = (q - 8) * s + zero, so
    AWQ's (q - z) * s needs zero = (8 - z) * s, rounded to bf16 (the one place it differs from AWQ's formula)."""
    q = unpack_int4(qweight).t().contiguous()  # [N, K] in 0..15
    packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), inner_k_tiles)
    zero = ((8 - unpack_int4(qzeros)).float() * scales.float()).to(DTYPE)
    return packed, torch.stack([scales, zero], -1).contiguous()  # [K / group, N, 2]


def bench_shape(name: str, n: int, k: int, matmul_types: list[str]) -> dict:
    awq_bytes = k * n // 2 + (k // GROUP) * n * (2 + 0.5)
    copies = max(2, math.ceil((256 << 20) / awq_bytes))
    awq = [_awq_copy(k, n) for _ in range(copies)]
    dense = [torch.randn(n, k, device="cuda").to(DTYPE) for _ in range(max(2, math.ceil((256 << 20) / (2 * n * k))))]
    x = torch.randn(1, k, device="cuda").to(DTYPE)
    ref = (x.float() @ dequantize_awq(*awq[0], GROUP).float()).squeeze(0)
    scale = ref.abs().max().item()
    row = {"op": name, "n": n, "k": k, "ref_absmax": round(scale, 4)}
    row["bf16_us"] = round(bench_us(lambda: [F.linear(x, w) for w in dense], calls_per_graph=1) / len(dense), 2)
    locks = gemv_locks(n, x.device)
    row["tessera_err"] = (awq_gemv(x, *awq[0], GROUP).float().squeeze(0) - ref).abs().max().item()
    row["tessera_us"] = round(bench_us(lambda: [awq_gemv(x, *w, GROUP, locks=locks) for w in awq],
                                       calls_per_graph=1) / len(awq), 2)
    for tiles in (2, 4, 8):
        key = f"tinygemm_t{tiles}"
        try:
            packed = [tinygemm_from_awq(*w, tiles) for w in awq]
            out = torch.ops.aten._weight_int4pack_mm(x, packed[0][0], GROUP, packed[0][1])
            row[f"{key}_err"] = (out.float().squeeze(0) - ref).abs().max().item()
            row[f"{key}_us"] = round(bench_us(lambda packed=packed: [torch.ops.aten._weight_int4pack_mm(
                x, w, GROUP, sz) for w, sz in packed], calls_per_graph=1) / len(packed), 2)
        except Exception as exc:  # noqa: BLE001
            row[f"{key}_error"] = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    for fma in (False, True) if matmul_types else ():
        layers = [gemlite_from_awq(*w, fma_mode=fma) for w in awq]
        for mt in (matmul_types if not fma else matmul_types[:1]):  # fma: GemLite's default mode, first kernel only
            key = f"gemlite_{mt.lower()}{'_fma' if fma else ''}"
            try:
                out = layers[0].forward_manual(x, mt)
                row[f"{key}_err"] = (out.float().squeeze(0) - ref).abs().max().item()
                row[f"{key}_us"] = round(bench_us(lambda mt=mt, layers=layers: [g.forward_manual(x, mt) for g in layers],
                                                  calls_per_graph=1) / len(layers), 2)
            except Exception as exc:  # noqa: BLE001 - a kernel that fails is reported, the others still run
                row[f"{key}_error"] = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    for key in [k_ for k_ in row if k_.endswith("_us")]:
        row[key.removesuffix("_us") + "_tbs"] = round((2 * n * k if key == "bf16_us" else awq_bytes) / row[key] / 1e6, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--matmul-types", default="GEMV_REVSPLITK,GEMV", help="GemLite kernels ('': none)")
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gemlite_bench.py: needs a CUDA GPU")
    try:
        import gemlite
    except ImportError:
        sys.exit("gemlite_bench.py: needs `pip install gemlite` (carried in .whl_gpu on the device)")
    print(json.dumps({"device": torch.cuda.get_device_name(), "gemlite": getattr(gemlite, "__version__", "?")}))
    rows = []
    for name, n, k, _ in shapes(ns.model):
        if name == "lm_head":
            continue
        row = bench_shape(name, n, k, [t for t in ns.matmul_types.split(",") if t])
        print("GEMLITE " + json.dumps(row), flush=True)
        rows.append(row)
    keys = [k for k in rows[0] if k.endswith("_us")]
    print(f"{'op':8}" + "".join(f"{k.removesuffix('_us'):>26}" for k in keys))
    for r in rows:
        print(f"{r['op']:8}" + "".join(f"{r.get(k, float('nan')):>14.2f}us {r.get(k.removesuffix('_us') + '_tbs', 0):5.2f}TB/s"
                                       for k in keys))


if __name__ == "__main__":
    main()
