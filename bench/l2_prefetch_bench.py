"""Can a batch-1 decode layer use its attention time to stream the next projections' weights into L2?

At batch 1 and short context, decode attention is latency-bound (~8 us per layer) and leaves DRAM nearly idle:
~24 MB of copy capacity per layer on an H100. The o projection that follows reads 16.8 MB (FP8) or 33.5 MB
(bf16) of weights. This times, on one device, each sequence captured in a CUDA graph (the engine replays its
decode step as one; the thirteenth session's version of this bench timed eager launches, so host launch gaps,
not the GPU, set its numbers), with L2 flushed first (a 512 MB write) and GPU time between CUDA events:

    attention alone | o GEMV cold | prefetch, idle 30 us, o GEMV (is the prefetch in L2?) | idle 30 us, o GEMV |
    attention -> o (today's order) | attention with the prefetch on a side stream -> o (the engine's candidate)
    the same two with gate_up after o, prefetching o and `--gate-up-mb` of gate_up

    python3 bench/l2_prefetch_bench.py [--bf16] [--context 640] [--programs 8] [--chunk 16384]

Kernels: `kernels.decode_attention` (as the engine runs it at batch 1), the engine's batch-1 GEMV
(`kernels.fp8_gemv` / `kernels.gemv`, this device's tuned tiles) and `kernels.l2_prefetch`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IDLE_CYCLES = 60_000  # ~30 us at 1.98 GHz: enough for a prefetch of o's weights to land


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf16", action="store_true", help="bf16 weights instead of FP8 (o: 33.5 MB vs 16.8 MB)")
    parser.add_argument("--context", type=int, default=640, help="tokens in the KV of the one decoding request")
    parser.add_argument("--programs", type=int, default=None, help="prefetch CTAs (default: kernels.l2_prefetch)")
    parser.add_argument("--chunk", type=int, default=None, help="bytes per prefetch instruction (multiple of 16)")
    parser.add_argument("--gate-up-mb", type=float, default=8.0, help="MB of gate_up's first rows prefetched too")
    parser.add_argument("--reps", type=int, default=50)
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("l2_prefetch_bench needs a CUDA GPU")

    from kernels import l2_prefetch
    from kernels.decode_attention import decode_attention
    from kernels.fp8_gemv import fp8_gemv
    from kernels.fp8_quant import quantize_weight_per_channel
    from kernels.gemv import fused_gemv

    programs = ns.programs or l2_prefetch.PROGRAMS
    chunk = ns.chunk or l2_prefetch.CHUNK
    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    hq, hkv, d, hidden, inter = 32, 8, 128, 4096, 14336
    slots = max(ns.context, 256)
    q = torch.randn(1, hq, d, device=dev).to(torch.bfloat16)
    k_buf = torch.randn(slots, hkv, d, device=dev).to(torch.bfloat16)
    v_buf = torch.randn(slots, hkv, d, device=dev).to(torch.bfloat16)
    req_to_token = torch.arange(slots, dtype=torch.int32, device=dev).reshape(1, -1)
    pool_idx = torch.zeros(1, dtype=torch.int32, device=dev)
    seq_lens = torch.full((1,), ns.context, dtype=torch.int32, device=dev)
    counters = torch.zeros(hkv, dtype=torch.int32, device=dev)
    attn_out = torch.empty(1, hq, d, dtype=torch.bfloat16, device=dev)

    def weights(n: int, k: int):
        w = torch.randn(n, k, device=dev) / k ** 0.5
        return (w.to(torch.bfloat16), None) if ns.bf16 else quantize_weight_per_channel(w)

    w_o, s_o = weights(hidden, hidden)
    w_gu, s_gu = weights(2 * inter, hidden)
    residual = torch.randn(1, hidden, device=dev).to(torch.bfloat16)
    norm = torch.ones(hidden, dtype=torch.bfloat16, device=dev)
    flush_buf = torch.empty(512 * 2**20, dtype=torch.uint8, device=dev)
    mb = 2**20
    o_only = l2_prefetch.plan([w_o], w_o.numel() * w_o.element_size())
    o_and_gu = l2_prefetch.plan([w_o, w_gu], w_o.numel() * w_o.element_size() + int(ns.gate_up_mb * mb))

    def attention():
        decode_attention(q, k_buf, v_buf, req_to_token, pool_idx, seq_lens, d ** -0.5, out=attn_out,
                         counters=counters)

    def gemv(x, w, s, **kw):
        return fused_gemv(x, w, **kw) if ns.bf16 else fp8_gemv(x, w, s, **kw)

    def o_proj():
        return gemv(attn_out.view(1, hidden), w_o, s_o, residual=residual)

    def o_gate_up():
        gemv(o_proj(), w_gu, s_gu, norm_weight=norm)

    def idle():
        torch.cuda._sleep(IDLE_CYCLES)

    def beside(ranges, body):
        with l2_prefetch.beside(ranges):
            body()

    def prefetch(ranges):
        l2_prefetch.prefetch(ranges, programs, chunk)

    l2_prefetch.PROGRAMS, l2_prefetch.CHUNK = programs, chunk  # what `beside` launches
    sequences = {
        "attention alone": attention,
        "o GEMV, cold L2": o_proj,
        "idle 30 us -> o": lambda: (idle(), o_proj()),
        "prefetch o, idle 30 us -> o": lambda: (prefetch(o_only), idle(), o_proj()),
        "prefetch o alone": lambda: prefetch(o_only),
        "attention -> o (today)": lambda: (attention(), o_proj()),
        "attention || prefetch o -> o": lambda: beside(o_only, lambda: (attention(), o_proj())),
        "attention -> o -> gate_up": lambda: (attention(), o_gate_up()),
        "attention || prefetch o+gu -> o -> gate_up": lambda: beside(o_and_gu, lambda: (attention(), o_gate_up())),
    }
    for body in sequences.values():  # compile outside the capture
        body()
    torch.cuda.synchronize()

    def timed(body) -> float:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            body()
        times = []
        for _ in range(ns.reps):
            flush_buf.zero_()  # evicts earlier weights and KV from L2; the graph launch queues behind it
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        return statistics.median(times)

    rows = {name: timed(body) for name, body in sequences.items()}
    report = {"device": torch.cuda.get_device_name(), "dtype": "bf16" if ns.bf16 else "fp8", "context": ns.context,
              "o_mb": round(w_o.numel() * w_o.element_size() / mb, 1), "gate_up_prefetch_mb": ns.gate_up_mb,
              "programs": programs, "chunk": chunk, "us": {k: round(v, 2) for k, v in rows.items()}}
    for name, us in rows.items():
        print(f"{name:44s} {us:8.2f} us")
    print("L2 " + json.dumps(report))


if __name__ == "__main__":
    main()
