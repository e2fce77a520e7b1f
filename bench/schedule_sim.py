"""Replays an online workload through the real Scheduler on a virtual clock: what a schedule policy does
to ITL and output throughput on a GPU, predicted on a CPU.

    python bench/schedule_sim.py --request-rate 32 --num-prompts 400 --engine-args '{"interleave_prefill_tokens": 1024}'

Everything that decides a schedule is the engine's own code (Scheduler, prefill planning, chunking,
interleaving, mixed chunks, the KV budget); only the model's forward is replaced, by zero logits and a
step-time model of the Llama-3.1-8B shape on one H200 that advances the clock. The model is fitted to
the profiles in bench/results/2026-11-22-h200-profile-*.log (decode at batch 1 / 64 / 256, prefill
chunks at 22.9 us per token) and the batch-1 figure of bench/RESULTS.md:

    decode step   = 4.19 ms (batch 1, fused GEMV) or 4.81 ms, + 8.3 us per row + KV bytes / 3.0 TB/s
    extend step   = max(weight-read floor 3.8 ms, 22.9 us per token) + attention + exposed CPU time
    attention     = per row, the larger of its FLOPs at 500 TFLOP/s and its KV bytes at 3.0 TB/s

A design tool: its figures are predictions to check with `bench/serving.py --backend engine` on the
device, never results. `--calibrate` runs the four schedules measured on an H200 on 2026-12-02
(bench/RESULTS.md, "Tail latency, 32 req/s") and prints prediction next to measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.workloads import offline_prompts, summarize_ms  # noqa: E402
from engine.args import ServerArgs  # noqa: E402
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.messages import BatchOutMsg, GenerateReqMsg  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402
from engine.overlap import CPU_OVERLAP_ENV  # noqa: E402
from engine.scheduler import Scheduler  # noqa: E402

DEMO_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "demo")
KV_BYTES_PER_TOKEN = 131072  # 8B shape: 32 layers x 8 KV heads x 128 x (K, V) x 2 bytes
# H200 serving runs, 2026-12-02 (triton backend, 400 prompts at 32 req/s, inputs 256-1024, 256 out):
# ITL median / mean / p99, TTFT median / p99 (ms), output tok/s (bench/results/2026-12-02-h200-online32.jsonl).
MEASURED = {
    "default": ({}, (13.2, 27.3, 243.0, 47, 100, 6152)),
    "mixed 1536": ({"enable_mixed_chunk": True}, (33.6, 57.3, 148.8, 1216, 6354, 4019)),
    "interleave 1024": ({"interleave_prefill_tokens": 1024}, (38.4, 34.2, 79.0, 138, 556, 5456)),
    "interleave 2048": ({"interleave_prefill_tokens": 2048}, (33.3, 34.2, 86.0, 76, 204, 5601)),
}


@dataclasses.dataclass(frozen=True)
class StepTimeModel:
    """Milliseconds of one forward of the 8B shape on an H200 (see the module docstring)."""

    decode_base_bs1_ms: float = 4.19
    decode_base_ms: float = 4.81
    decode_per_row_ms: float = 0.0083
    kv_read_tbs: float = 3.0
    weight_floor_ms: float = 3.8
    prefill_per_token_ms: float = 0.0229
    attention_tflops: float = 500.0
    # A prefill step runs eagerly and synchronously: its kernel launches bound it from below, and its
    # scheduling and output handling are not hidden behind another step (overlap chains decodes only).
    extend_launch_floor_ms: float = 8.0
    extend_cpu_ms: float = 3.0
    extend_cpu_per_row_ms: float = 0.02
    # The first decode step after a prefill step: the overlap pipeline restarts, its preparation is exposed.
    restart_ms: float = 2.0
    restart_per_row_ms: float = 0.01
    mixed_decode_row_penalty: float = 1.0  # decode rows through the extend kernel vs the decode kernel

    def attention_ms(self, prefix: int, new: int, penalty: float = 1.0) -> float:
        flops = 4 * new * (prefix + new / 2) * (KV_BYTES_PER_TOKEN / 4)  # q width = 4 x KV width (GQA 4)
        byte_s = (prefix + new) * KV_BYTES_PER_TOKEN / (self.kv_read_tbs * 1e12)
        return max(flops / (self.attention_tflops * 1e12), byte_s * penalty) * 1e3

    def step_ms(self, fb, after_extend: bool) -> float:
        rows = fb.batch_size
        if fb.forward_mode.is_decode:
            base = self.decode_base_bs1_ms if rows == 1 else self.decode_base_ms
            kv = sum(fb.seq_lens_cpu) * KV_BYTES_PER_TOKEN / (self.kv_read_tbs * 1e12) * 1e3
            restart = self.restart_ms + self.restart_per_row_ms * rows if after_extend else 0.0
            return base + self.decode_per_row_ms * rows + kv + restart
        tokens = sum(fb.extend_lens_cpu)
        attention = sum(self.attention_ms(p, e, self.mixed_decode_row_penalty if e == 1 and p > 0 else 1.0)
                        for p, e in zip(fb.prefix_lens_cpu, fb.extend_lens_cpu))
        gpu = max(self.weight_floor_ms, self.prefill_per_token_ms * tokens) + attention
        return max(gpu, self.extend_launch_floor_ms) + self.extend_cpu_ms + self.extend_cpu_per_row_ms * rows


class VirtualClock:
    def __init__(self) -> None:
        self.now_ms = 0.0
        self.last_was_extend = False


def build_scheduler(engine_args: dict, model: StepTimeModel, clock: VirtualClock, on_msg) -> Scheduler:
    # The 8B shape's KV budget on an H200 at --mem-fraction-static 0.85: ~790k tokens.
    # As on a GPU: up to 1024 running requests, decode steps chained by overlap scheduling.
    os.environ[CPU_OVERLAP_ENV] = "1"
    args = ServerArgs(model_path=DEMO_MODEL, device="cpu", skip_tokenizer_init=True, context_length=2048,
                      max_total_tokens=790_000, max_running_requests=1024, random_seed=0, **engine_args)
    runner = ModelRunner(args, create_model_config(args, "cpu"), TPContext(), torch.device("cpu"))
    vocab = runner.model_config.vocab_size

    def forward(fb) -> torch.Tensor:
        clock.now_ms += model.step_ms(fb, clock.last_was_extend)
        clock.last_was_extend = not fb.forward_mode.is_decode
        return torch.zeros(fb.logits_indices.numel(), vocab)

    runner.forward = forward  # type: ignore[method-assign]
    return Scheduler(args, runner, TPContext(), None, [], on_msg)


def simulate(engine_args: dict, rate: float, num_prompts: int, min_in: int, max_in: int, output_len: int,
             model: StepTimeModel, seed: int = 0) -> dict:
    clock = VirtualClock()
    token_times: dict[str, list[float]] = {}
    finished: dict[str, float] = {}

    def on_msg(msg) -> None:
        if not isinstance(msg, BatchOutMsg):
            return
        for out in msg.outputs:
            if out.new_token_ids:
                token_times[out.rid].append(clock.now_ms)
            if out.finished:
                finished[out.rid] = clock.now_ms

    scheduler = build_scheduler(engine_args, model, clock, on_msg)
    prompts = offline_prompts(num_prompts, min_in, max_in, 4000, seed)
    rng, t = random.Random(seed), 0.0
    arrivals = []
    for i, prompt in enumerate(prompts):  # Poisson arrivals, as bench/serving.py paces them
        arrivals.append((t, f"r{i}", prompt))
        t += rng.expovariate(rate) * 1e3
    arrived: dict[str, float] = {}
    sampling = {"max_new_tokens": output_len, "temperature": 0, "ignore_eos": True}
    pending = list(arrivals)
    while pending or scheduler.has_work:
        while pending and pending[0][0] <= clock.now_ms:
            at, rid, prompt = pending.pop(0)
            arrived[rid], token_times[rid] = at, []
            scheduler.handle(GenerateReqMsg(rid=rid, input_ids=prompt, sampling=dict(sampling), stream=True))
        if not scheduler.has_work:
            clock.now_ms = pending[0][0]
            continue
        scheduler.step()
    ttft = [(token_times[rid][0] - arrived[rid]) / 1e3 for rid in arrived]
    itl = [(b - a) / 1e3 for rid in arrived for a, b in zip(token_times[rid], token_times[rid][1:])]
    duration_s = (max(finished.values()) - arrivals[0][0]) / 1e3
    out_tokens = sum(len(v) for v in token_times.values())
    return {"engine_args": engine_args, "request_rate": rate, "duration_s": round(duration_s, 2),
            "output_tok_s": round(out_tokens / duration_s, 1), "itl": summarize_ms(itl), "ttft": summarize_ms(ttft),
            "steps": scheduler.num_forward_steps}


def line(label: str, r: dict) -> str:
    return (f"{label:<18} ITL median {r['itl']['median_ms']:7.1f} mean {r['itl']['mean_ms']:6.1f} p99 "
            f"{r['itl']['p99_ms']:7.1f} ms | TTFT median "
            f"{r['ttft']['median_ms']:7.0f} p99 {r['ttft']['p99_ms']:7.0f} ms | {r['output_tok_s']:7.0f} tok/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--request-rate", type=float, default=32.0)
    parser.add_argument("--num-prompts", type=int, default=400)
    parser.add_argument("--min-input-len", type=int, default=256)
    parser.add_argument("--max-input-len", type=int, default=1024)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--engine-args", action="append", default=None,
                        help="JSON of ServerArgs fields; repeat to compare schedules")
    parser.add_argument("--model", default="{}", help="JSON overriding StepTimeModel fields")
    parser.add_argument("--calibrate", action="store_true", help="the four measured schedules, side by side")
    ns = parser.parse_args()
    model = StepTimeModel(**json.loads(ns.model))
    common = (ns.request_rate, ns.num_prompts, ns.min_input_len, ns.max_input_len, ns.output_len, model)
    if ns.calibrate:
        for label, (extra, measured) in MEASURED.items():
            r = simulate(extra, *common)
            print(line(f"{label} (sim)", r), flush=True)
            itl50, itl_mean, itl99, ttft50, ttft99, tok_s = measured
            print(f"{label + ' (H200)':<18} ITL median {itl50:7.1f} mean {itl_mean:6.1f} p99 {itl99:7.1f} ms | "
                  f"TTFT median {ttft50:7.0f} "
                  f"p99 {ttft99:7.0f} ms | {tok_s:7.0f} tok/s", flush=True)
        return
    for spec in ns.engine_args or ["{}"]:
        r = simulate(json.loads(spec), *common)
        print(line(spec, r), flush=True)
        print("SIM " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
