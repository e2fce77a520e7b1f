"""Where a step's time goes: one decode step (graph replay) and one prefill chunk of the real model
runner, timed with CUDA events against the bytes/FLOPs they must move, plus a per-kernel table
from torch.profiler.

    python bench/profile_step.py --model bench/models/llama-3.1-8b --batch-sizes 1 64 --context 640

Decode: `bs` requests with `--context` cached tokens each (random slots, so the KV reads gather
like a long-running server's); floor = max(weights except embedding / copy bandwidth,
2 * params * bs / matmul rate) + KV bytes / copy bandwidth (the projections turn compute-bound
near batch 200 on Hopper).
Prefill: `--prefill-reqs` x `--prefill-len` new tokens; floor = 2 * params * tokens / matmul rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.roofline import copy_bandwidth_tbs, matmul_tflops, median_ms, model_shape  # noqa: E402
from engine.args import ServerArgs  # noqa: E402
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.forward_batch import ForwardBatch, ForwardMode  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402


def _batch(runner: ModelRunner, prefix_lens: list[int], extend_lens: list[int], mode: ForwardMode,
           dense: bool = False) -> ForwardBatch:
    """Requests in rows 0..B-1 with random KV slots for their whole sequence; with `dense`, one request whose
    slots are the run 1..n, as a long prompt on a fresh pool gets them (FlashInfer's dense prefill path)."""
    dev = runner.device
    seq_lens = [p + e for p, e in zip(prefix_lens, extend_lens)]
    if dense:
        assert len(seq_lens) == 1, "the dense prefill path takes one request"
        perm = torch.arange(1, seq_lens[0] + 1, device=dev)
    else:
        perm = torch.randperm(runner.kv_pool.size, device=dev)[: sum(seq_lens)] + 1
    table = runner.req_pool.req_to_token
    locs, start = [], 0
    for i, n in enumerate(seq_lens):
        table[i, :n] = perm[start:start + n].to(torch.int32)
        locs.append(perm[start + prefix_lens[i]:start + n])
        start += n
    positions = torch.cat([torch.arange(p, s) for p, s in zip(prefix_lens, seq_lens)]).to(dev)
    num_tokens = int(positions.numel())
    starts = [0]
    for e in extend_lens[:-1]:
        starts.append(starts[-1] + e)
    last_rows = [s + e - 1 for s, e in zip(starts, extend_lens)]

    def t(values, dtype=torch.int32):
        return torch.tensor(values, dtype=dtype, device=dev)

    return ForwardBatch(
        forward_mode=mode, batch_size=len(seq_lens),
        input_ids=torch.randint(100, 1000, (num_tokens,), device=dev), positions=positions,
        req_pool_indices=torch.arange(len(seq_lens), device=dev), seq_lens=t(seq_lens),
        out_cache_loc=torch.cat(locs).long(), req_to_token=table, prefix_lens=t(prefix_lens),
        extend_lens=t(extend_lens), extend_start_loc=t(starts), seq_lens_cpu=seq_lens,
        prefix_lens_cpu=prefix_lens, extend_lens_cpu=extend_lens, logits_indices=t(last_rows, torch.int64),
        kv_run_first=1 if dense else None)


def _fill_kv_random(kv_pool) -> None:
    """Random K/V in every slot. The pool starts as zeros, and FlashInfer's prefill over a zero prefix ran ~15 %
    faster than over the engine's real prefix (1,387 vs ~1,600 ms for a 16k chunk after 83k tokens, H200): zero
    operands draw less power, so the tensor cores keep a higher clock. Random values make the profile's chunk
    cost what the engine's does."""
    for buf in (*kv_pool.k_buffers, *kv_pool.v_buffers):
        for part in buf.split(65536):  # a bounded temporary per layer
            part.copy_(torch.randn(part.shape, dtype=torch.bfloat16, device=part.device))


def engine_args_json(parser: argparse.ArgumentParser, value: str) -> dict:
    """`--engine-args` as a dict of ServerArgs fields; anything but a JSON object is a usage error."""
    try:
        extra = json.loads(value)
        assert isinstance(extra, dict)
    except (ValueError, AssertionError):
        parser.error(f"--engine-args: a JSON object, got {value!r}")
    return extra


def batch1_runner(model: str, context: int, extra: dict) -> ModelRunner:
    """A batch-1 decode runner of `model` (dummy weights, triton attention, CUDA graphs for one row) with random K/V
    in its pool, for `context`-token steps."""
    args = ServerArgs(model_path=model, load_format="dummy", skip_tokenizer_init=True, attention_backend="triton",
                      cuda_graph_max_bs=1, max_running_requests=1, max_total_tokens=100_000,
                      context_length=max(8192, context + 1), **extra)
    runner = ModelRunner(args, create_model_config(args, "cuda"), TPContext(), torch.device("cuda", 0))
    _fill_kv_random(runner.kv_pool)
    return runner


def _kernel_table(fn, reps: int = 3, rows: int = 14) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    try:
        return prof.key_averages().table(sort_by="device_time_total", row_limit=rows, max_name_column_width=60)
    except Exception as exc:  # the table is a diagnostic; never lose the timings over it
        return f"(no kernel table: {exc})"


def _mixed_step(runner: ModelRunner, chunk: int, decodes: int, context: int) -> dict:
    """A mixed step (engine/mixed_chunk.py: decodes as one-token extend rows, eager) against the chunk
    alone plus a graph-replayed decode step: what riding along costs or saves on the GPU."""
    mixed = _batch(runner, [0] + [context - 1] * decodes, [chunk] + [1] * decodes, ForwardMode.EXTEND)
    alone = _batch(runner, [0], [chunk], ForwardMode.EXTEND)
    decode = _batch(runner, [context - 1] * decodes, [1] * decodes, ForwardMode.DECODE)
    mixed_ms = median_ms(lambda: runner.forward(mixed), 10)
    alone_ms = median_ms(lambda: runner.forward(alone), 10)
    decode_ms = median_ms(lambda: runner.forward(decode), 30)
    print(_kernel_table(lambda: runner.forward(mixed), reps=2), flush=True)
    return {"mixed_ms": round(mixed_ms, 2), "chunk_alone_ms": round(alone_ms, 2), "decode_step_ms": round(decode_ms, 2),
            "apart_ms": round(alone_ms + decode_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--context", type=int, default=640)
    parser.add_argument("--prefill-reqs", type=int, default=8)
    parser.add_argument("--prefill-len", type=int, default=1024)
    parser.add_argument("--prefill-prefix", type=int, default=0,
                        help="cached tokens before each prefill chunk (e.g. 92000 with --prefill-len 8192: the last "
                             "chunk of a 100k prompt, where attention dominates)")
    parser.add_argument("--dense", action="store_true",
                        help="one prefill request over the slot run 1..n (FlashInfer's dense prefill, as a long "
                             "prompt on a fresh pool runs); needs --prefill-reqs 1")
    parser.add_argument("--zero-kv", action="store_true",
                        help="leave the KV pool as zeros (profiles before 2026-12-04 did: faster prefill attention "
                             "than real keys and values give)")
    parser.add_argument("--attention-backend", default="triton")
    parser.add_argument("--mixed", type=int, nargs=2, metavar=("CHUNK", "DECODES"),
                        help="also time one mixed step (a CHUNK-token prompt + DECODES decode rows of --context) "
                             "against the prefill chunk and the decode step run apart")
    parser.add_argument("--engine-args", default="{}",
                        help='extra ServerArgs fields as JSON, e.g. \'{"quantization": "fp8", "kv_cache_dtype": "fp8_e4m3"}\'')
    ns = parser.parse_args()
    extra = engine_args_json(parser, ns.engine_args)
    if ns.dense and ns.prefill_reqs != 1:
        parser.error("--dense: the dense prefill path takes one request (--prefill-reqs 1)")
    shape = model_shape(ns.model)
    bw, flops = copy_bandwidth_tbs(), matmul_tflops()
    torch.cuda.empty_cache()
    rows = max(max(ns.batch_sizes), ns.prefill_reqs, ns.mixed[1] + 1 if ns.mixed else 0)
    args = ServerArgs(model_path=ns.model, load_format="dummy", skip_tokenizer_init=True,
                      attention_backend=ns.attention_backend, cuda_graph_max_bs=rows,
                      max_running_requests=rows,
                      max_total_tokens=max(400_000, 2 * (ns.prefill_prefix + ns.prefill_len),
                                           max(ns.batch_sizes) * ns.context + ns.prefill_prefix + ns.prefill_len),
                      context_length=max(8192, ns.prefill_prefix + ns.prefill_len, ns.context + 1), **extra)
    runner = ModelRunner(args, create_model_config(args, "cuda"), TPContext(), torch.device("cuda", 0))
    if not ns.zero_kv:
        _fill_kv_random(runner.kv_pool)
    report: dict = {"device": torch.cuda.get_device_name(), "copy_tbs": round(bw, 3), "matmul_tflops": round(flops, 1)}
    for bs in ns.batch_sizes:
        fb = _batch(runner, [ns.context - 1] * bs, [1] * bs, ForwardMode.DECODE)
        ms = median_ms(lambda fb=fb: runner.forward(fb), 30)
        weights_ms = max(shape.bytes_per_decode_step / (bw * 1e12), shape.bytes_per_decode_step * bs / (flops * 1e12))
        floor_ms = (weights_ms + bs * ns.context * shape.kv_bytes_per_token / (bw * 1e12)) * 1e3
        report[f"decode_bs{bs}"] = {"step_ms": round(ms, 3), "floor_ms": round(floor_ms, 3),
                                    "of_floor": round(floor_ms / ms, 3), "tok_s": round(bs * 1e3 / ms, 1)}
        print(f"decode bs={bs}: {json.dumps(report[f'decode_bs{bs}'])}", flush=True)
        if bs == ns.batch_sizes[0]:
            print(_kernel_table(lambda fb=fb: runner.forward(fb)), flush=True)
    n = ns.prefill_reqs
    fb = _batch(runner, [ns.prefill_prefix] * n, [ns.prefill_len] * n, ForwardMode.EXTEND, dense=ns.dense)
    ms = median_ms(lambda: runner.forward(fb), 5)
    tokens = n * ns.prefill_len
    floor_ms = 2 * shape.num_params * tokens / (flops * 1e12) * 1e3
    # Causal attention: each new token attends to the prefix and to the new tokens before it (QK and PV).
    attended = n * (ns.prefill_len * ns.prefill_prefix + ns.prefill_len * (ns.prefill_len + 1) / 2)
    cfg = runner.model_config
    attn_gflop = 4 * attended * cfg.num_layers * cfg.hf_config.num_attention_heads * cfg.head_dim / 1e9
    report["prefill"] = {"tokens": tokens, "prefix": ns.prefill_prefix, "ms": round(ms, 2),
                         "matmul_floor_ms": round(floor_ms, 2), "attention_gflop": round(attn_gflop),
                         "tflops_with_attention": round((2 * shape.num_params * tokens / 1e9 + attn_gflop) / ms, 1),
                         "tok_s": round(tokens * 1e3 / ms), "of_floor": round(floor_ms / ms, 3)}
    print(f"prefill {n}x{ns.prefill_len} after {ns.prefill_prefix}: {json.dumps(report['prefill'])}", flush=True)
    print(_kernel_table(lambda: runner.forward(fb), reps=2), flush=True)
    if ns.mixed:
        report["mixed"] = _mixed_step(runner, ns.mixed[0], ns.mixed[1], ns.context)
        print(f"mixed {ns.mixed[0]} + {ns.mixed[1]} decodes: {json.dumps(report['mixed'])}", flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "profile.json"), "w") as f:
            json.dump(report, f, indent=1)
    print("PROFILE " + json.dumps(report))


if __name__ == "__main__":
    main()
