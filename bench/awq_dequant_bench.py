"""AWQ dequantize (`kernels.awq_gemm.awq_dequantize`, the int4 -> 16-bit pass before cuBLAS) on a model's projections.

    python bench/awq_dequant_bench.py [--model bench/models/llama-3.1-8b] [--default-only] [--rows 512]

Prefill and decode batches of DEQUANT_MATMUL_MIN_ROWS rows and up (engine/quant/awq.py) dequantize every AWQ
projection once per forward, then multiply with cuBLAS, so this pass sits in AWQ's TTFT and in every large-batch
decode step. It streams the int4 weights, zeros and scales in and writes the dense 16-bit matrix out: ~2.5 bytes
of DRAM traffic per weight, i.e. its floor is the copy bandwidth. Per projection and tile config: us per call
(a CUDA graph over enough weight copies to miss L2) and TB/s of read + written bytes; then the layer's sum for the
default and the best configs, and at `--rows` rows the dequantize + cuBLAS time per layer against bf16 cuBLAS.
`--default-only` calls `awq_dequantize` without a config (for timing an older tree with the same script).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.awq_bench import DTYPE, GROUP, _awq_copy, _copies  # noqa: E402
from bench.gemv_bench import shapes  # noqa: E402
from bench.kernels_bench import bench_us  # noqa: E402
from bench.roofline import copy_bandwidth_tbs  # noqa: E402
from engine.quant.awq import dequantize_awq  # noqa: E402
from kernels.awq_gemm import awq_dequantize  # noqa: E402

try:  # absent in trees older than the config argument (--default-only times those)
    from kernels.awq_gemm import AwqDequantConfig

    SWEEP = [AwqDequantConfig(block_k=bk, block_p=bp, num_warps=w)
             for bk, bp, w in ((16, 32, 4), (32, 32, 4), (16, 16, 4), (16, 64, 4), (16, 32, 2), (16, 64, 8),
                               (8, 32, 4), (8, 64, 4), (8, 16, 2), (32, 16, 4))]
except ImportError:
    SWEEP = []


def traffic_bytes(k: int, n: int) -> int:
    """int4 weights + packed zeros + 16-bit scales read, the dense 16-bit matrix written."""
    return k * n // 2 + (k // GROUP) * (n // 2 + n * 2) + k * n * 2


def bench_op(name: str, n: int, k: int, configs: list) -> dict[str, float]:
    nbytes = traffic_bytes(k, n)
    copies = [_awq_copy(k, n) for _ in range(_copies(nbytes))]
    ref = dequantize_awq(*copies[0], GROUP)
    row: dict[str, float] = {}
    for cfg in configs:
        label = "default" if cfg is None else f"k{cfg.block_k}_p{cfg.block_p}_w{cfg.num_warps}"
        kwargs = {} if cfg is None else {"config": cfg}
        assert torch.equal(awq_dequantize(*copies[0], GROUP, **kwargs), ref), f"{name} {label}: wrong bits"
        us = bench_us(lambda kw=kwargs: [awq_dequantize(*w, GROUP, **kw) for w in copies],
                      calls_per_graph=1) / len(copies)
        row[label] = round(us, 2)
    best = min(row, key=row.get)
    print(json.dumps({"op": name, "n": n, "k": k, "mb": round(nbytes / 1e6, 1), "us": row, "best": best,
                      "best_tbs": round(nbytes / row[best] / 1e6, 3)}), flush=True)
    return row


def bench_rows(name: str, n: int, k: int, m: int) -> tuple[float, float]:
    awq = _awq_copy(k, n)
    dense = torch.randn(n, k, device="cuda").to(DTYPE)
    x = torch.randn(m, k, device="cuda").to(DTYPE)
    return bench_us(lambda: x @ awq_dequantize(*awq, GROUP), calls_per_graph=2), \
        bench_us(lambda: F.linear(x, dense), calls_per_graph=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--default-only", action="store_true")
    parser.add_argument("--rows", type=int, default=512)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = json.loads(Path(args.model, "config.json").read_text())
    layers = cfg["num_hidden_layers"]
    ops = [(name, n, k) for name, n, k, _ in shapes(args.model) if name != "lm_head"]
    configs = [None] if args.default_only else [None, *SWEEP]
    print(json.dumps({"device": torch.cuda.get_device_name(), "copy_tbs": round(copy_bandwidth_tbs(), 3)}))
    rows = {name: bench_op(name, n, k, configs) for name, n, k in ops}
    layer = {label: round(sum(r[label] for r in rows.values()), 1) for label in rows[ops[0][0]]}
    best = {name: min(r, key=r.get) for name, r in rows.items()}
    best_us = sum(rows[name][label] for name, label in best.items())
    nbytes = sum(traffic_bytes(k, n) for _, n, k in ops)
    print(f"per layer: default {layer['default']} us ({nbytes / layer['default'] / 1e6:.2f} TB/s), "
          f"best per op {best_us:.1f} us ({nbytes / best_us / 1e6:.2f} TB/s); x {layers} layers: "
          f"{layer['default'] * layers / 1e3:.2f} ms per forward on the default")
    print("LAYER " + json.dumps({"layer_us": layer, "best_per_op": best}))
    deq = dense = 0.0
    for name, n, k in ops:
        a, b = bench_rows(name, n, k, args.rows)
        deq, dense = deq + a, dense + b
    print(f"{args.rows} rows, per layer: dequantize + cuBLAS {deq:.1f} us, bf16 cuBLAS {dense:.1f} us "
          f"({deq / dense:.2f}x)")


if __name__ == "__main__":
    main()
