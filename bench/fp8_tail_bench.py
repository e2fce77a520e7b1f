"""FP8 layer tail (o + gate_up + down) at batch 1: three `kernels.fp8_gemv` launches vs one persistent
`kernels.fp8_layer_tail` launch, each as a CUDA graph over `--layers` layers of distinct random FP8 weights (so
nothing is served from L2), timed by CUDA events (median of `--reps` replays).

    python3 bench/fp8_tail_bench.py                      # 8B shapes, 32 layers
    python3 bench/fp8_tail_bench.py --per-sm 1,2,3,4     # grid sizes: programs per SM (0 = all that fit)

Prints us per layer, the weights' TB/s, the grid, the kernel's registers, and whether the outputs are
bit-identical to the three launches (they must be: same tiles, same arithmetic).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.roofline import median_ms  # noqa: E402
from kernels import fp8_layer_tail as tail_module  # noqa: E402
from kernels.fp8_gemv import fp8_gemv, pick_config  # noqa: E402
from kernels.fp8_layer_tail import DEFAULT_CONFIG, Fp8TailConfig, fp8_layer_tail  # noqa: E402
from kernels.fp8_quant import FP8_DTYPE  # noqa: E402


def _weights(layers: int, n: int, k: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for _ in range(layers):
        w = torch.empty(n, k, device=device, dtype=torch.float16).uniform_(-448, 448).to(FP8_DTYPE)
        out.append((w, torch.full((n,), 0.02 / 448, device=device)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--q-width", type=int, default=4096)
    parser.add_argument("--inter", type=int, default=14336)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--per-sm", default="0", help="comma-separated programs per SM to try (0: all that fit)")
    parser.add_argument("--tiles", default="", help="extra tail tiles, ';'-separated 'bo,lo,bgu,lgu,bd,ld' (e.g. "
                        "8,4,8,4,8,3: the GEMVs' own tiles)")
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("fp8_tail_bench.py: needs a CUDA GPU")
    dev = torch.device("cuda", 0)
    h, q, inter, n_layers = ns.hidden, ns.q_width, ns.inter, ns.layers
    torch.manual_seed(0)
    o = _weights(n_layers, h, q, dev)
    gu = _weights(n_layers, 2 * inter, h, dev)
    down = _weights(n_layers, h, inter, dev)
    norm = torch.ones(h, device=dev, dtype=torch.bfloat16)
    attn = torch.randn(1, q, device=dev, dtype=torch.bfloat16)
    stream0 = torch.randn(1, h, device=dev, dtype=torch.bfloat16)
    bytes_per_layer = h * q + 2 * inter * h + h * inter

    def three():
        s = stream0
        for i in range(n_layers):
            hid = fp8_gemv(attn, *o[i], residual=s)
            g = fp8_gemv(hid, *gu[i], norm_weight=norm, eps=1e-5)
            s = fp8_gemv(g, *down[i], silu_mul=True, residual=hid)
        return s

    def fused(cfg: Fp8TailConfig):
        def run():
            s = stream0
            for i in range(n_layers):
                s = fp8_layer_tail(attn, s, *o[i], norm, 1e-5, *gu[i], *down[i], config=cfg)
            return s
        return run

    def graphed(fn):
        fn()  # compile / size the grid outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
        graph.replay()
        torch.cuda.synchronize()
        return graph, out

    g3, ref = graphed(three)
    t3 = median_ms(g3.replay, ns.reps) * 1e3 / n_layers
    rows = [{"run": "three launches", "us_per_layer": round(t3, 2),
             "tbs": round(bytes_per_layer / t3 / 1e6, 3), "tiles": [tuple(pick_config(n, k, dev)) for n, k in
                                                                    ((h, q), (2 * inter, h), (h, inter))]}]
    base = DEFAULT_CONFIG
    configs = [base._replace(programs_per_sm=int(p)) for p in ns.per_sm.split(",")]
    for spec in filter(None, ns.tiles.split(";")):
        bo, lo, bgu, lgu, bd, ld = (int(v) for v in spec.split(","))
        configs.append(base._replace(block_n_o=bo, lean_o=lo, block_n_gate_up=bgu, lean_gate_up=lgu,
                                     block_n_down=bd, lean_down=ld))
    for cfg in configs:
        try:
            graph, out = graphed(fused(cfg))
        except Exception as exc:  # noqa: BLE001 - a tile that does not compile / fit is reported, not fatal
            rows.append({"run": "tail", "config": cfg._asdict(), "error": str(exc).splitlines()[0][:200]})
            continue
        t = median_ms(graph.replay, ns.reps) * 1e3 / n_layers
        layer = tail_module._Layer(h, q, inter)
        grid = tail_module._grid(0, layer, cfg, torch.bfloat16)
        rows.append({"run": "tail", "config": cfg._asdict(), "programs": grid.programs, "maxnreg": grid.maxnreg, "us_per_layer": round(t, 2),
                     "tbs": round(bytes_per_layer / t / 1e6, 3), "vs_three": round(t / t3, 4),
                     "bit_identical": bool(torch.equal(out, ref))})
        del graph
    for row in rows:
        print("FP8_TAIL " + json.dumps(row), flush=True)
    print(f"{'run':16} {'per SM':>6} {'programs':>8} {'us/layer':>9} {'TB/s':>6} {'vs three':>8} {'identical':>9}")
    for row in rows:
        cfg = row.get("config", {})
        print(f"{row['run']:16} {cfg.get('programs_per_sm', '-')!s:>6} {row.get('programs', '-')!s:>8} "
              f"{row.get('us_per_layer', float('nan')):9.2f} {row.get('tbs', float('nan')):6.3f} "
              f"{row.get('vs_three', 1.0):8.4f} {row.get('bit_identical', '-')!s:>9} {row.get('error', '')}")


if __name__ == "__main__":
    main()
