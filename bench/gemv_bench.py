"""Batch-1 decode projections: cuBLAS + separate small kernels vs the fused Triton GEMV (`kernels.gemv`).

    python bench/gemv_bench.py [--model bench/models/llama-3.1-8b] [--quick]
    python bench/gemv_bench.py --sweep [--out gemv_tuned.json] [--ops qkv,o] [--jobs 12] [--no-stack]

`--sweep`: the per-device tile sweep instead (`bench/gemv_sweep.py`: split-K candidates for the small
projections, winners written as a `kernels.gemv_configs.TUNED` entry). Without it:

1. Per projection of one layer (qkv with its RMSNorm, o with the residual add, gate/up with its
   RMSNorm, down with SiLU-and-mul and the residual add, the LM head): cuBLAS `F.linear` alone, the
   unfused sequence the model runs without fusion, and a sweep of fused-GEMV tile configurations.
   Each op cycles over enough weight copies to miss L2 (as a real step does) inside a CUDA graph.
2. The whole stack of decoder projections (all layers, no attention) in one CUDA graph, unfused vs
   fused with the default tiles and with the sweep's best tiles: the per-step time fusion moves.
   (Programmatic dependent launch and register double-buffering were tried on an H100 on 2026-11-22
   and moved nothing measurable; see bench/NOTES.md.)
Prints JSON lines, then a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.kernels_bench import bench_us  # noqa: E402
from bench.roofline import copy_bandwidth_tbs  # noqa: E402
from kernels import fused_add_rmsnorm, rmsnorm, silu_and_mul  # noqa: E402
from kernels.gemv import GemvConfig, default_config, fused_gemv  # noqa: E402

DTYPE = torch.bfloat16
EPS = 1e-5


def graph_us(fns, reps: int = 20) -> float:
    """GPU time of one pass over `fns` (each a no-arg launch sequence), replayed from a CUDA graph."""
    return bench_us(lambda: [fn() for fn in fns], reps=reps, calls_per_graph=1)


def _randn(*shape: int) -> torch.Tensor:
    return (torch.randn(*shape, device="cuda", dtype=torch.float32) * 0.02).to(DTYPE)


class Projection:
    """One projection kind, with enough weight copies that cycling through them defeats L2."""

    def __init__(self, name: str, n: int, k: int, kind: str, l2_bytes: int = 256 << 20) -> None:
        self.name, self.n, self.k, self.kind = name, n, k, kind  # kind: rms | res | silu_res
        self.copies = max(2, math.ceil(l2_bytes / (n * k * 2)))
        self.weights = [_randn(n, k) for _ in range(self.copies)]
        self.x = _randn(1, 2 * k if kind == "silu_res" else k) * 50
        self.gamma = (1 + _randn(k)).contiguous()
        self.residual = _randn(1, n)
        self.out = torch.empty(1, n, device="cuda", dtype=DTYPE)

    @property
    def bytes(self) -> int:
        return self.n * self.k * 2

    def cublas(self):
        x = self.x[:, : self.k]
        return [lambda w=w: torch.matmul(x, w.t(), out=self.out) for w in self.weights]

    def unfused(self):
        def one(w):
            if self.kind == "rms":
                F.linear(rmsnorm(self.x, self.gamma, EPS), w)
            elif self.kind == "res":
                fused_add_rmsnorm(F.linear(self.x, w), self.residual, self.gamma, EPS)  # the add lives in the norm
            else:
                F.linear(silu_and_mul(self.x), w)
        return [lambda w=w: one(w) for w in self.weights]

    def kwargs(self) -> dict:
        """The prologue / epilogue the engine fuses into this projection."""
        kw = {"norm_weight": self.gamma, "eps": EPS} if self.kind == "rms" else {"residual": self.residual}
        if self.kind == "silu_res":
            kw["silu_mul"] = True
        return kw

    def fused(self, cfg: GemvConfig | None):
        kw = self.kwargs()
        return [lambda w=w: fused_gemv(self.x, w, out=self.out, config=cfg, **kw)
                for w in self.weights]

    def check(self, cfg: GemvConfig) -> float:
        """Max abs difference of the fused result vs the unfused torch expression (fp32 math)."""
        w = self.weights[0]
        if self.kind == "rms":
            xf = self.x.float()
            normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(DTYPE)
            ref = F.linear(self.gamma * normed, w)
            got = fused_gemv(self.x, w, norm_weight=self.gamma, eps=EPS, config=cfg)
        elif self.kind == "res":
            ref = self.residual + F.linear(self.x, w)
            got = fused_gemv(self.x, w, residual=self.residual, config=cfg)
        else:
            gate, up = self.x.chunk(2, dim=-1)
            ref = self.residual + F.linear(F.silu(gate) * up, w)
            got = fused_gemv(self.x, w, silu_mul=True, residual=self.residual, config=cfg)
        return float((got.float() - ref.float()).abs().max())


def candidate_configs(quick: bool) -> list[GemvConfig]:
    tiles = [(4, 1024), (8, 512), (8, 1024), (16, 512), (32, 256)] if not quick else [(8, 512), (8, 1024)]
    out = [GemvConfig(bn, bk, warps, 1) for bn, bk in tiles for warps in (4, 8)]
    return out + [GemvConfig(8, 512, 4, 3), GemvConfig(16, 512, 4, 3), GemvConfig(8, 1024, 8, 2)]


def shapes(model_dir: str) -> list[tuple[str, int, int, str]]:
    cfg = json.loads(Path(model_dir, "config.json").read_text())
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return [("qkv", q + 2 * kv, h, "rms"), ("o", h, q, "res"), ("gate_up", 2 * inter, h, "rms"),
            ("down", h, inter, "silu_res"), ("lm_head", cfg["vocab_size"], h, "rms")]


def stack_us(layers, mode: str, configs: dict[str, GemvConfig | None]) -> float:
    """One decode step's projections (no attention), all layers, in one graph."""
    h = layers[0]["o"].shape[0]
    stream0 = _randn(1, h) * 50
    attn_out = _randn(1, layers[0]["o"].shape[1])
    gamma = (1 + _randn(h)).contiguous()
    calls = []
    if mode == "unfused":
        def step():
            hidden, residual = stream0, stream0
            normed = rmsnorm(hidden, gamma, EPS)
            for lw in layers:
                F.linear(normed, lw["qkv"])
                hidden, residual = fused_add_rmsnorm(F.linear(attn_out, lw["o"]), residual, gamma, EPS)
                hidden = F.linear(silu_and_mul(F.linear(hidden, lw["gate_up"])), lw["down"])
                normed, residual = fused_add_rmsnorm(hidden, residual, gamma, EPS)
        calls.append(step)
    else:
        def step():
            stream = stream0
            for lw in layers:
                fused_gemv(stream, lw["qkv"], norm_weight=gamma, eps=EPS, config=configs["qkv"])
                stream = fused_gemv(attn_out, lw["o"], residual=stream, config=configs["o"])
                gu = fused_gemv(stream, lw["gate_up"], norm_weight=gamma, eps=EPS, config=configs["gate_up"])
                stream = fused_gemv(gu, lw["down"], silu_mul=True, residual=stream, config=configs["down"])
        calls.append(step)
    return graph_us(calls, reps=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="per-device tile sweep (bench/gemv_sweep.py)")
    parser.add_argument("--out", help="--sweep: where to write gemv_tuned.json (default $OUT/gemv_tuned.json)")
    parser.add_argument("--ops", help="--sweep: comma-separated subset of qkv,o,gate_up,down")
    parser.add_argument("--jobs", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)),
                        help="--sweep: processes that precompile the candidates (1: compile serially)")
    parser.add_argument("--no-stack", action="store_true", help="--sweep: skip the all-layers comparison")
    args = parser.parse_args()
    if args.sweep:
        from bench.gemv_sweep import run_sweep

        run_sweep(args.model, args.out, args.jobs, args.ops.split(",") if args.ops else None, not args.no_stack)
        return
    torch.manual_seed(0)
    bw = copy_bandwidth_tbs()
    print(json.dumps({"device": torch.cuda.get_device_name(), "copy_tbs": round(bw, 3)}), flush=True)

    best: dict[str, GemvConfig] = {}
    rows = []
    for name, n, k, kind in shapes(args.model):
        proj = Projection(name, n, k, kind)
        gb = proj.bytes / 1e9
        res = {"op": name, "n": n, "k": k, "kind": kind,
               "cublas_us": graph_us(proj.cublas()) / proj.copies,
               "unfused_us": graph_us(proj.unfused()) / proj.copies}
        default = default_config(k)
        res["default_us"] = graph_us(proj.fused(default)) / proj.copies
        sweep = []
        for cfg in candidate_configs(args.quick):
            try:
                err = proj.check(cfg)
                us = graph_us(proj.fused(cfg)) / proj.copies
            except Exception as exc:  # noqa: BLE001 - a config that does not compile is skipped, loudly
                print(json.dumps({"op": name, "config": cfg._asdict(), "error": str(exc).splitlines()[0][:160]}))
                continue
            sweep.append((us, cfg, err))
            print(json.dumps({"op": name, "config": cfg._asdict(), "us": round(us, 2),
                              "tbs": round(gb / us * 1e3, 3), "max_err": err}), flush=True)
        sweep.sort(key=lambda t: t[0])
        best[name] = sweep[0][1]
        res.update({"best_us": sweep[0][0], "best_config": sweep[0][1]._asdict(), "best_err": sweep[0][2],
                    "cublas_tbs": gb / res["cublas_us"] * 1e3, "best_tbs": gb / sweep[0][0] * 1e3})
        print(json.dumps(res), flush=True)
        rows.append(res)
        del proj
        torch.cuda.empty_cache()

    cfg = json.loads(Path(args.model, "config.json").read_text())
    layer_shapes = {name: (n, k) for name, n, k, _ in shapes(args.model) if name != "lm_head"}
    layers = [{name: _randn(n, k) for name, (n, k) in layer_shapes.items()} for _ in range(cfg["num_hidden_layers"])]
    stack = {"unfused_ms": stack_us(layers, "unfused", {}) / 1e3,
             "fused_default_ms": stack_us(layers, "fused", dict.fromkeys(layer_shapes)) / 1e3,
             "fused_best_ms": stack_us(layers, "fused", best) / 1e3}
    weights_gb = sum(n * k * 2 for n, k in layer_shapes.values()) * len(layers) / 1e9
    stack["weights_gb"] = weights_gb
    stack["floor_ms_at_copy_bw"] = weights_gb / bw
    print(json.dumps({"stack": stack}), flush=True)

    print(f"\n{'op':8} {'N x K':>13} {'cuBLAS us':>10} {'TB/s':>6} {'unfused':>8} {'default':>8} "
          f"{'best':>8} {'TB/s':>6}  best config")
    for r in rows:
        c = r["best_config"]
        print(f"{r['op']:8} {r['n']:>6}x{r['k']:<6} {r['cublas_us']:10.1f} {r['cublas_tbs']:6.2f} "
              f"{r['unfused_us']:8.1f} {r['default_us']:8.1f} {r['best_us']:8.1f} {r['best_tbs']:6.2f}  "
              f"bn={c['block_n']} bk={c['block_k']} w={c['num_warps']} st={c['num_stages']}")
    print(f"\nstack of {len(layers)} layers' projections ({weights_gb:.2f} GB, floor "
          f"{stack['floor_ms_at_copy_bw']:.3f} ms at {bw:.2f} TB/s): " +
          ", ".join(f"{k} {v:.3f}" for k, v in stack.items() if k.endswith("_ms")))


if __name__ == "__main__":
    main()
