"""Can a batch-1 decode layer use its attention time to stream the o projection's weights into L2?

At batch 1 and short context, decode attention is latency-bound (~7 us per layer on an H200 at ~130 tokens, the
FP8 step profile in bench/RESULTS.md) and leaves DRAM nearly idle: ~30 MB of copy capacity per layer. The o
projection that follows reads 16.8 MB (FP8) or 33.5 MB (bf16) of weights, which fit in the H200's 50 MB L2. This
times, on one device, each with L2 flushed first (a 512 MB write) and GPU time between CUDA events:

    attention alone | o GEMV cold | o GEMV with its weights already in L2 | L2 touch of o's weights alone |
    attention -> o (today's order) | attention with the touch on a side stream -> o (the candidate)

    python3 bench/l2_prefetch_bench.py [--bf16] [--context 130]

Kernels: `kernels.decode_attention` (single-launch merge, as the engine runs it at batch 1) and the engine's
batch-1 GEMV (`kernels.fp8_gemv` / `kernels.gemv`, this device's tuned tiles). The touch is a plain read of the
weight bytes with `evict_last` (its xor is stored so the reads are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOUCH_BLOCK = 4096  # int32 words per program per iteration (16 KB)


@triton.jit
def _l2_touch_kernel(src_ptr, sink_ptr, n_words, words_per_program, BLOCK: tl.constexpr):
    start = tl.program_id(0) * words_per_program
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for off in range(start, start + words_per_program, BLOCK):
        offs = off + tl.arange(0, BLOCK)
        acc ^= tl.load(src_ptr + offs, mask=offs < n_words, other=0, eviction_policy="evict_last")
    tl.store(sink_ptr + tl.program_id(0), tl.xor_sum(acc, 0))


def l2_touch(weight: torch.Tensor, sink: torch.Tensor) -> None:
    """Reads every byte of `weight` once (into L2, marked evict-last), with `sink.numel()` programs."""
    words = weight.view(torch.int32).reshape(-1)
    programs = sink.numel()
    per_program = triton.cdiv(triton.cdiv(words.numel(), programs), TOUCH_BLOCK) * TOUCH_BLOCK
    _l2_touch_kernel[(programs,)](words, sink, words.numel(), per_program, BLOCK=TOUCH_BLOCK, num_warps=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bf16", action="store_true", help="bf16 o weights (33.5 MB) instead of FP8 (16.8 MB)")
    parser.add_argument("--context", type=int, default=130, help="tokens in the KV of the one decoding request")
    parser.add_argument("--touch-programs", type=int, default=32,
                        help="programs of the L2 touch (few: attention must keep its SMs)")
    parser.add_argument("--reps", type=int, default=50)
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("l2_prefetch_bench needs a CUDA GPU")

    from kernels.decode_attention import decode_attention
    from kernels.fp8_gemv import fp8_gemv
    from kernels.fp8_quant import quantize_weight_per_channel
    from kernels.gemv import fused_gemv

    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    hq, hkv, d, hidden = 32, 8, 128, 4096
    slots = max(ns.context, 256)
    q = torch.randn(1, hq, d, device=dev).to(torch.bfloat16)
    k_buf = torch.randn(slots, hkv, d, device=dev).to(torch.bfloat16)
    v_buf = torch.randn(slots, hkv, d, device=dev).to(torch.bfloat16)
    req_to_token = torch.arange(slots, dtype=torch.int32, device=dev).reshape(1, -1)
    pool_idx = torch.zeros(1, dtype=torch.int32, device=dev)
    seq_lens = torch.full((1,), ns.context, dtype=torch.int32, device=dev)
    counters = torch.zeros(hkv, dtype=torch.int32, device=dev)
    attn_out = torch.empty(1, hq, d, dtype=torch.bfloat16, device=dev)
    w = torch.randn(hidden, hidden, device=dev) / hidden ** 0.5
    w_o, w_scale = (w.to(torch.bfloat16), None) if ns.bf16 else quantize_weight_per_channel(w)
    residual = torch.randn(1, hidden, device=dev).to(torch.bfloat16)
    sink = torch.empty(ns.touch_programs, dtype=torch.int32, device=dev)
    flush_buf = torch.empty(512 * 2**20, dtype=torch.uint8, device=dev)
    side = torch.cuda.Stream(device=dev)

    def attention():
        decode_attention(q, k_buf, v_buf, req_to_token, pool_idx, seq_lens, d ** -0.5, out=attn_out,
                         counters=counters)

    def o_proj():
        x = attn_out.view(1, hidden)
        if ns.bf16:
            fused_gemv(x, w_o, residual=residual)
        else:
            fp8_gemv(x, w_o, w_scale, residual=residual)

    def touch():
        l2_touch(w_o, sink)

    def attention_touch_side():
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            touch()
        attention()
        torch.cuda.current_stream().wait_stream(side)

    def timed(body, warm=None) -> float:
        times = []
        for _ in range(ns.reps):
            flush_buf.zero_()  # evicts earlier weights and KV from L2; also gives the host a head start
            if warm is not None:
                warm()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            body()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e3)
        return statistics.median(times)

    for fn in (attention, o_proj, touch, attention_touch_side):  # compile
        fn()
    torch.cuda.synchronize()
    rows = {
        "attention alone": timed(attention),
        "o GEMV, cold L2": timed(o_proj),
        "o GEMV, weights in L2": timed(o_proj, warm=touch),
        "L2 touch of o's weights alone": timed(touch),
        "attention -> o (today)": timed(lambda: (attention(), o_proj())),
        "attention || touch -> o": timed(lambda: (attention_touch_side(), o_proj())),
    }
    report = {"device": torch.cuda.get_device_name(), "o_weight_mb": round(w_o.numel() * w_o.element_size() / 1e6, 1),
              "dtype": "bf16" if ns.bf16 else "fp8", "context": ns.context, "touch_programs": ns.touch_programs,
              "us": {k: round(v, 2) for k, v in rows.items()}}
    for name, us in rows.items():
        print(f"{name:32s} {us:8.2f} us")
    print("L2 " + json.dumps(report))


if __name__ == "__main__":
    main()
