"""Kernel micro-benchmarks on the GPU: decode attention (the memory-bound hot loop) and extend attention.

    python bench/kernels_bench.py [--batch 64 --seq-len 1024 --q-heads 32 --kv-heads 8 --head-dim 128]

Prints the device's copy bandwidth first (the roofline for decode), then decode attention time and
effective bandwidth (K/V bytes + slot indices read) for the default split heuristic and a sweep of
split counts, then extend (prefill) attention throughput in TFLOP/s.

    python bench/kernels_bench.py --sweep-tiles [--kv-dtype fp8_e4m3]

instead times decode attention's stage-1 launch shapes (`DecodeTiles`: KV rows per step, warps, pipeline
stages, and for fp8 pools the fp16 vs bf16 upcast) at three serving shapes (batch 1 at 100k context,
batch 64 at 1k, batch 256 at 768: the offline benchmark's), graph-replayed and checked against the
default's output.

    python bench/kernels_bench.py --sweep-min-split-len

times batch-1 decode attention as the engine launches it (single pass, counters) for each `min_split_len` at
contexts from 160 to 32k tokens (`sweep_min_split_len`).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.decode_attention import (  # noqa: E402
    LONG_SPLIT_FROM,
    LONG_SPLIT_LEN,
    DecodeTiles,
    decode_attention,
    default_max_kv_splits,
)
from kernels.extend_attention import extend_attention  # noqa: E402


def bench_us(fn, reps: int = 20, calls_per_graph: int = 10) -> float:
    """Mean GPU time of one call, replayed from a CUDA graph so host launch overhead is not counted
    (that also checks the launch is graph-capturable)."""
    fn()  # compile + warm up outside the capture
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls_per_graph):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (reps * calls_per_graph)


def eager_us(fn, reps: int = 100) -> float:
    """Mean wall time per call issued back to back from Python (includes launch overhead)."""
    import time

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e6 / reps


def copy_bandwidth_tbs() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = bench_us(lambda: dst.copy_(src), reps=5, calls_per_graph=2)
    return 2 * src.numel() / (us * 1e-6) / 1e12  # bytes read + written


def bench_decode(args: argparse.Namespace) -> None:
    b, s, hq, hkv, d = args.batch, args.seq_len, args.q_heads, args.kv_heads, args.head_dim
    dtype = torch.bfloat16
    num_slots = b * s + 1
    kv_dtype = torch.float8_e4m3fn if args.kv_dtype == "fp8_e4m3" else dtype
    k_buffer = torch.randn(num_slots, hkv, d, device="cuda", dtype=dtype).to(kv_dtype)
    v_buffer = torch.randn_like(k_buffer, dtype=dtype).to(kv_dtype)
    # Shuffled slots, as a long-running server's pool looks: every request's K/V is a gather.
    req_to_token = (torch.randperm(b * s, device="cuda") + 1).to(torch.int32).view(b, s)
    req_pool_indices = torch.arange(b, device="cuda")
    seq_lens = torch.full((b,), s, dtype=torch.int32, device="cuda")
    q = torch.randn(b, hq, d, device="cuda", dtype=dtype)
    kv_bytes = 2 * b * s * hkv * d * k_buffer.element_size() + b * s * 4
    default = default_max_kv_splits(b, hkv, q.device)
    print(f"decode attention  B={b} seq={s} Hq={hq} Hkv={hkv} D={d} q bf16, KV {args.kv_dtype}, "
          f"KV read {kv_bytes / 1e6:.1f} MB")
    for splits in dict.fromkeys([default, 1, 2, 4, 8, 16]):  # default first, no repeats
        def run(splits: int = splits) -> torch.Tensor:
            return decode_attention(q, k_buffer, v_buffer, req_to_token, req_pool_indices, seq_lens, d**-0.5,
                                    max_kv_splits=splits)

        us = bench_us(run)
        tag = f"  (default; eager loop {eager_us(run):.1f} us)" if splits == default else ""
        print(f"  max_kv_splits={splits:<3d} {us:8.1f} us  {kv_bytes / (us * 1e-6) / 1e12:5.2f} TB/s{tag}")


MIN_SPLIT_LENS = (64, 128, 256, 512, 1024)
SPLIT_LEN_CONTEXTS = (160, 512, 1024, 1536, 2048, 3072, 4096, 8192, 32768)


def sweep_min_split_len(args: argparse.Namespace) -> None:
    """Batch-1 decode attention as the engine runs it (single pass: splits merged by the last-arriving program
    through per-head counters; max_kv_splits at its default) for each `min_split_len` at short to mid contexts.
    Why: at batch 1 and ~130 tokens the kernel takes 7.2 us per layer on an H200 (tenth-session profile), mostly
    dependent round trips; min_split_len 64 gives 3 splits there and the merge adds the counter atomic and the
    partials' reload. A longer minimum split means fewer programs, each looping more, and no merge when 1 split."""
    hq, hkv, d = args.q_heads, args.kv_heads, args.head_dim
    dtype = torch.bfloat16
    splits = default_max_kv_splits(1, hkv, torch.device("cuda"))
    counters = torch.zeros(hkv, dtype=torch.int32, device="cuda")
    print(f"batch-1 decode attention, single pass, max_kv_splits={splits}: us per call by min_split_len "
          f"(one minimum at every length), then the default rule ({LONG_SPLIT_LEN} past {LONG_SPLIT_FROM} tokens, else 64)")
    print("context  " + "  ".join(f"{m:>7d}" for m in MIN_SPLIT_LENS) + "  default")
    for s in SPLIT_LEN_CONTEXTS:
        k_buffer = torch.randn(s + 1, hkv, d, device="cuda", dtype=dtype)
        v_buffer = torch.randn_like(k_buffer)
        req_to_token = (torch.randperm(s, device="cuda") + 1).to(torch.int32).view(1, s)
        pool_idx = torch.zeros(1, dtype=torch.int64, device="cuda")
        seq_lens = torch.full((1,), s, dtype=torch.int32, device="cuda")
        q = torch.randn(1, hq, d, device="cuda", dtype=dtype)
        operands = (q, k_buffer, v_buffer, req_to_token, pool_idx, seq_lens, d**-0.5)
        ref = decode_attention(*operands, max_kv_splits=1)
        row = []
        for m in (*MIN_SPLIT_LENS, None):
            pinned = {} if m is None else {"min_split_len": m, "long_split_len": m}
            run = functools.partial(decode_attention, *operands, max_kv_splits=splits, counters=counters, **pinned)
            torch.testing.assert_close(run(), ref, atol=2e-2, rtol=2e-2)
            row.append(bench_us(run))
        print(f"{s:>7d}  " + "  ".join(f"{us:7.2f}" for us in row), flush=True)


SWEEP_SHAPES = [(1, 100_000), (64, 1024), (256, 768)]  # (batch, context)
SWEEP_TILES = [DecodeTiles(), DecodeTiles(block_n=64), DecodeTiles(block_n=32, num_stages=3),
               DecodeTiles(block_n=64, num_stages=3), DecodeTiles(block_n=128, num_stages=3),
               DecodeTiles(block_n=128, num_warps=8),
               DecodeTiles(block_n=32, num_warps=2, num_stages=3), DecodeTiles(block_n=16, num_warps=2, num_stages=4)]


def sweep_decode_tiles(args: argparse.Namespace) -> None:
    # fp8 pools: the bf16 upcast first (a first-measured config has looked slower: order effects show here)
    fp8_old = [DecodeTiles(block_n=64, fp8_as_fp16=False), DecodeTiles(block_n=128, fp8_as_fp16=False)]
    # fp8_convert (K, V or both converted in the load layout, no LDS.U8): the 4 rows after fp8_old at the
    # start, again just before fp8_old at the end (the printed line does not show fp8_convert: count rows).
    fp8_cvt = [DecodeTiles(block_n=128, num_stages=3, fp8_convert=3),
               DecodeTiles(block_n=128, num_stages=3, fp8_convert=2),
               DecodeTiles(block_n=64, num_stages=3, fp8_convert=3),
               DecodeTiles(block_n=128, num_warps=8, num_stages=2, fp8_convert=3)]
    tiles = (fp8_old + fp8_cvt + SWEEP_TILES + fp8_cvt + fp8_old) if args.kv_dtype == "fp8_e4m3" else SWEEP_TILES
    for batch, context in SWEEP_SHAPES:
        sweep_decode_shape(args, batch, context, tiles)
        torch.cuda.empty_cache()


def sweep_decode_shape(args: argparse.Namespace, b: int, s: int, tiles: list[DecodeTiles]) -> None:
    hq, hkv, d = args.q_heads, args.kv_heads, args.head_dim
    gen = torch.Generator(device="cuda").manual_seed(0)
    k_buffer = torch.randn(b * s + 1, hkv, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    v_buffer = torch.randn(b * s + 1, hkv, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    if args.kv_dtype == "fp8_e4m3":
        k_buffer, v_buffer = k_buffer.to(torch.float8_e4m3fn), v_buffer.to(torch.float8_e4m3fn)
    req_to_token = (torch.randperm(b * s, device="cuda", generator=gen) + 1).to(torch.int32).view(b, s)
    req_pool_indices = torch.arange(b, device="cuda")
    seq_lens = torch.full((b,), s, dtype=torch.int32, device="cuda")
    q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16, generator=gen)
    counters = torch.zeros(b * hkv, dtype=torch.int32, device="cuda")  # the engine's single-pass merge
    kv_bytes = 2 * b * s * hkv * d * k_buffer.element_size() + b * s * 4
    print(f"decode tiles  B={b} seq={s} KV {args.kv_dtype}: {kv_bytes / 1e6:.0f} MB read")
    run = functools.partial(decode_attention, q, k_buffer, v_buffer, req_to_token, req_pool_indices, seq_lens,
                            d**-0.5, counters=counters)
    ref = None
    for t in tiles:
        try:
            out = run(tiles=t)
            ref = out if ref is None else ref
            err = (out.float() - ref.float()).abs().max().item()
            us = bench_us(functools.partial(run, tiles=t), reps=10, calls_per_graph=5)
        except Exception as exc:  # a shape that does not compile (shared memory): report and go on
            print(f"  {t}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})")
            continue
        print(f"  block_n={t.block_n} warps={t.num_warps} stages={t.num_stages} fp16={int(t.fp8_as_fp16)} "
              f"cvt={t.fp8_convert}: "
              f"{us:9.1f} us  {kv_bytes / (us * 1e-6) / 1e12:5.2f} TB/s  max|diff| {err:.2e}")


def bench_extend_case(batch: int, prefix_len: int, extend_len: int, hq: int, hkv: int, d: int) -> None:
    dtype = torch.bfloat16
    seq_len = prefix_len + extend_len
    k_buffer = torch.randn(batch * seq_len + 1, hkv, d, device="cuda", dtype=dtype)
    v_buffer = torch.randn_like(k_buffer)
    req_to_token = (torch.randperm(batch * seq_len, device="cuda") + 1).to(torch.int32).view(batch, seq_len)
    num_tokens = batch * extend_len
    q = torch.randn(num_tokens, hq, d, device="cuda", dtype=dtype)
    k = torch.randn(num_tokens, hkv, d, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    prefix_lens = torch.full((batch,), prefix_len, dtype=torch.int32, device="cuda")
    extend_lens = torch.full((batch,), extend_len, dtype=torch.int32, device="cuda")
    starts = (torch.arange(batch, device="cuda") * extend_len).to(torch.int32)
    req_pool_indices = torch.arange(batch, device="cuda")
    us = bench_us(lambda: extend_attention(q, k, v, k_buffer, v_buffer, req_to_token, req_pool_indices,
                                           prefix_lens, extend_lens, starts, extend_len, d**-0.5), reps=5)
    # 4 * D flops per (query, visible key) pair: QK^T and PV, a multiply-add each
    pairs = batch * hq * (extend_len * prefix_len + extend_len * (extend_len + 1) / 2)
    print(f"extend attention  B={batch} prefix={prefix_len} extend={extend_len}: {us:8.1f} us  "
          f"{4 * d * pairs / (us * 1e-6) / 1e12:6.1f} TFLOP/s")


def bench_extend(args: argparse.Namespace) -> None:
    for batch, prefix_len, extend_len in [(4, 0, 2048), (4, 2048, 512)]:
        bench_extend_case(batch, prefix_len, extend_len, args.q_heads, args.kv_heads, args.head_dim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--q-heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--skip-extend", action="store_true")
    parser.add_argument("--kv-dtype", choices=["bf16", "fp8_e4m3"], default="bf16",
                        help="decode attention's pool dtype (fp8: half the bytes read; scales 1.0)")
    parser.add_argument("--sweep-tiles", action="store_true",
                        help="time decode attention's launch shapes at three serving shapes instead")
    parser.add_argument("--sweep-min-split-len", action="store_true",
                        help="time batch-1 decode attention (single pass) per min_split_len at short contexts instead")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("kernels_bench needs a CUDA GPU")
    props = torch.cuda.get_device_properties(0)
    import triton

    print(f"device: {props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, "
          f"triton {triton.__version__}")
    print(f"copy bandwidth (read + write): {copy_bandwidth_tbs():.2f} TB/s")
    if args.sweep_tiles:
        return sweep_decode_tiles(args)
    if args.sweep_min_split_len:
        return sweep_min_split_len(args)
    bench_decode(args)
    if not args.skip_extend:
        bench_extend(args)


if __name__ == "__main__":
    main()
