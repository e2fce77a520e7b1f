"""FP8 weights on the device: the batch-1 FP8 GEMV (`kernels.fp8_gemv`) tile sweep, and the W8A8
`_scaled_mm` GEMM (`kernels.fp8_gemm`, activation quantization included) against bf16 cuBLAS.

    python bench/fp8_gemv_bench.py [--model bench/models/llama-3.1-8b] [--quick]

1. Batch 1, per decoder projection (qkv, o, gate_up, down): bf16 cuBLAS, the bf16 Triton GEMV
   (`kernels.gemv`, no prologue), `_scaled_mm` at M=1, and a sweep of FP8 GEMV tiles (with split-K
   variants). Each op cycles over enough weight copies to miss L2, inside a CUDA graph. TB/s counts
   the bytes of the weight as stored (fp8: N*K, bf16: 2*N*K).
2. Larger M (16, 128, 512, 4096): bf16 cuBLAS vs per-token quantization + `_scaled_mm`, TFLOP/s.
Prints JSON lines; the best FP8 GEMV tile per projection goes into `kernels.fp8_gemv.default_config`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.kernels_bench import bench_us  # noqa: E402
from bench.roofline import copy_bandwidth_tbs  # noqa: E402
from kernels.fp8_gemm import fp8_linear_scaled_mm  # noqa: E402
from kernels.fp8_gemv import Fp8GemvConfig, default_config, fp8_gemv  # noqa: E402
from kernels.fp8_quant import dequantize, quantize_weight_per_channel  # noqa: E402
from kernels.gemv import fused_gemv  # noqa: E402

L2_BYTES = 256 << 20


def graph_us(fns) -> float:
    return bench_us(lambda: [fn() for fn in fns], reps=20, calls_per_graph=1)


def shapes(model_dir: str) -> list[tuple[str, int, int]]:
    cfg = json.loads(Path(model_dir, "config.json").read_text())
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return [("qkv", q + 2 * kv, h), ("o", h, q), ("gate_up", 2 * inter, h), ("down", h, inter)]


def candidate_configs(quick: bool) -> list[Fp8GemvConfig]:
    tiles = [(8, 1024), (8, 2048), (16, 1024), (4, 2048)] if not quick else [(8, 1024), (8, 2048)]
    out = [Fp8GemvConfig(bn, bk, w, 1) for bn, bk in tiles for w in (4, 8)]
    out += [Fp8GemvConfig(8, 1024, 4, 3), Fp8GemvConfig(16, 1024, 8, 2), Fp8GemvConfig(8, 512, 4, 3)]
    return out + [c._replace(split_k=s) for c in out[:2] for s in (2, 4)]


def batch1(name: str, n: int, k: int, quick: bool) -> dict:
    copies = max(2, math.ceil(L2_BYTES / (n * k)))
    w16 = [(torch.randn(n, k, device="cuda") * 0.02).bfloat16() for _ in range(copies)]
    fp8 = [quantize_weight_per_channel(w) for w in w16]
    x = torch.randn(1, k, device="cuda").bfloat16()
    out = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
    res = {"op": name, "n": n, "k": k,
           "bf16_cublas_us": graph_us([lambda w=w: torch.matmul(x, w.t(), out=out) for w in w16]) / copies,
           "bf16_gemv_us": graph_us([lambda w=w: fused_gemv(x, w, out=out) for w in w16]) / copies,
           "fp8_scaled_mm_m1_us": graph_us([lambda q=q, s=s: fp8_linear_scaled_mm(x, q, s) for q, s in fp8]) / copies}
    ref = x.float() @ dequantize(*fp8[0]).t()
    sweep = []
    for cfg in [default_config(n, k, x.device)] + candidate_configs(quick):
        try:
            err = float((fp8_gemv(x, *fp8[0], config=cfg).float() - ref).abs().max())
            us = graph_us([lambda q=q, s=s, c=cfg: fp8_gemv(x, q, s, out=out, config=c) for q, s in fp8]) / copies
        except Exception as exc:  # noqa: BLE001 - a config that does not compile is skipped, loudly
            print(json.dumps({"op": name, "config": cfg._asdict(), "error": str(exc).splitlines()[0][:160]}))
            continue
        sweep.append((us, cfg, err))
        print(json.dumps({"op": name, "config": cfg._asdict(), "us": round(us, 2),
                          "tbs": round(n * k / us / 1e6, 3), "max_err": err}), flush=True)
    default_us = sweep[0][0]
    sweep.sort(key=lambda t: t[0])
    res.update({"fp8_gemv_default_us": default_us, "fp8_gemv_best_us": sweep[0][0],
                "best_config": sweep[0][1]._asdict(),
                "bf16_gemv_tbs": 2 * n * k / res["bf16_gemv_us"] / 1e6,
                "fp8_gemv_best_tbs": n * k / sweep[0][0] / 1e6,
                "speedup_vs_bf16_gemv": res["bf16_gemv_us"] / sweep[0][0]})
    return res


def gemm(name: str, n: int, k: int, m: int) -> dict:
    w = (torch.randn(n, k, device="cuda") * 0.02).bfloat16()
    q, s = quantize_weight_per_channel(w)
    x = torch.randn(m, k, device="cuda").bfloat16()
    flop = 2 * m * n * k
    bf16_us = graph_us([lambda: torch.matmul(x, w.t())])
    fp8_us = graph_us([lambda: fp8_linear_scaled_mm(x, q, s)])
    return {"op": name, "m": m, "n": n, "k": k, "bf16_us": round(bf16_us, 2), "fp8_us": round(fp8_us, 2),
            "bf16_tflops": round(flop / bf16_us / 1e6, 1), "fp8_tflops": round(flop / fp8_us / 1e6, 1),
            "speedup": round(bf16_us / fp8_us, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(json.dumps({"device": torch.cuda.get_device_name(), "copy_tbs": round(copy_bandwidth_tbs(), 3)}),
          flush=True)
    rows = []
    for name, n, k in shapes(args.model):
        rows.append(batch1(name, n, k, args.quick))
        print(json.dumps(rows[-1]), flush=True)
        torch.cuda.empty_cache()
    total = {key: sum(r[key] for r in rows) for key in ("bf16_gemv_us", "fp8_gemv_default_us", "fp8_gemv_best_us")}
    print(json.dumps({"layer_projections_us": total,
                      "fp8_best_speedup": round(total["bf16_gemv_us"] / total["fp8_gemv_best_us"], 3)}), flush=True)
    for name, n, k in shapes(args.model):
        for m in (16, 128, 512, 4096):
            print(json.dumps(gemm(name, n, k, m)), flush=True)


if __name__ == "__main__":
    main()
