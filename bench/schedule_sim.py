"""Replays an online workload through the real Scheduler on a virtual clock: what a schedule policy does
to ITL and output throughput on a GPU, predicted on a CPU.

    python bench/schedule_sim.py --request-rate 32 --num-prompts 400 --engine-args '{"interleave_prefill_tokens": 1024}'

Everything that decides a schedule is the engine's own code (Scheduler, prefill planning, chunking,
interleaving, mixed chunks, overlap chaining, the KV budget); only the model's forward is replaced, by
zero logits and a GPU step-time model of the Llama-3.1-8B shape on one H200, fitted to the profiles in
bench/results/2026-11-22-h200-profile-*.log (decode at batch 1 / 64 / 256, prefill at 22.9 us per
token) and the batch-1 figure of bench/RESULTS.md:

    decode step = 4.19 ms (batch 1, fused GEMV) or 4.81 ms, + 8.3 us per row + KV bytes / 3.0 TB/s
    extend step = max(weight-read floor 3.8 ms, 22.9 us per token) + attention
    attention   = per row, the larger of its FLOPs at 500 TFLOP/s and its KV bytes at 3.0 TB/s
    a decode batch above --cuda-graph-max-bs (256) runs eagerly: >= 24 ms of host launches

Host and GPU run on one virtual timeline (VirtualClock): the host advances by the scheduler's own Python
time, measured as it runs here (`cpu_scale` scales it), and by kernel launches; a step that must read
its predecessor's results first (anything not chained by overlap scheduling) leaves the GPU idle.

A design tool: its figures are predictions to check with `bench/serving.py --backend engine` on the
device, never results. `--calibrate` runs the schedules measured on an H200 on 2026-12-02 (read from
bench/results/2026-12-02-h200-online32.jsonl; bench/RESULTS.md, "Tail latency, 32 req/s") and prints
prediction next to measurement: it matches the
default schedule but not yet interleaving or mixed chunks (bench/NOTES.md); `TESSERA_STEP_TRACE`
(engine/step_trace.py, device stage online-32-trace) records the real step times to fit it to.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.workloads import offline_prompts, summarize_ms  # noqa: E402
from engine.args import ServerArgs  # noqa: E402
from engine.cuda_graph_runner import default_graph_max_bs  # noqa: E402
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.messages import BatchOutMsg, GenerateReqMsg  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402
from engine.overlap import CPU_OVERLAP_ENV  # noqa: E402
from engine.schedule_policy import default_chunked_prefill_size  # noqa: E402
from engine.scheduler import Scheduler  # noqa: E402

DEMO_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "demo")
KV_BYTES_PER_TOKEN = 131072  # 8B shape: 32 layers x 8 KV heads x 128 x (K, V) x 2 bytes
# H200 serving runs, 2026-12-02 (triton backend, 400 prompts at 32 req/s, inputs 256-1024, 256 out): each
# bench/serving.py result line, then its "SUMMARY {engine args} rate ..." line.
MEASURED_RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "2026-12-02-h200-online32.jsonl")


def measured_runs(path: str = MEASURED_RUNS) -> list[tuple[dict, dict]]:
    """(engine args, bench/serving.py result) of each run in a serving results file."""
    runs, result = [], None
    with open(path) as f:
        for text in f:
            if text.startswith("{"):
                result = json.loads(text)
            elif text.startswith("SUMMARY ") and result is not None:
                engine_args, _ = json.JSONDecoder().raw_decode(text[len("SUMMARY "):])
                runs.append((engine_args, result))
                result = None
    return runs


@dataclasses.dataclass(frozen=True)
class StepTimeModel:
    """GPU milliseconds of one forward of the 8B shape on an H200 (see the module docstring)."""

    decode_base_bs1_ms: float = 4.19
    decode_base_ms: float = 4.81
    decode_per_row_ms: float = 0.0083
    kv_read_tbs: float = 3.0
    weight_floor_ms: float = 3.8
    prefill_per_token_ms: float = 0.0229
    attention_tflops: float = 500.0
    mixed_decode_row_penalty: float = 1.0  # decode rows through the extend kernel vs the decode kernel
    # Host time to launch an eager forward (an extend step: ~500 kernel launches); a decode graph replay
    # costs a fraction of a millisecond.
    extend_launch_ms: float = 6.0
    decode_launch_ms: float = 0.3
    # A decode batch larger than the captured graphs runs eagerly: ~24 ms of host launches at batch 256
    # (offline 5,943 tok/s eager vs 8,365 with graphs to 256, bench/NOTES.md 2026-11-22).
    eager_decode_launch_ms: float = 24.0
    graph_max_bs: int = 256  # set from --cuda-graph-max-bs
    # The scheduler's own Python time is measured as it runs here and multiplied by this (the GPU host's
    # cores are faster than a shared 2-core box: < 1).
    cpu_scale: float = 1.0

    def attention_ms(self, prefix: int, new: int, penalty: float = 1.0) -> float:
        flops = 4 * new * (prefix + new / 2) * (KV_BYTES_PER_TOKEN / 4)  # q width = 4 x KV width (GQA 4)
        byte_s = (prefix + new) * KV_BYTES_PER_TOKEN / (self.kv_read_tbs * 1e12)
        return max(flops / (self.attention_tflops * 1e12), byte_s * penalty) * 1e3

    def gpu_ms(self, fb) -> float:
        if fb.forward_mode.is_decode:
            rows = fb.batch_size
            base = self.decode_base_bs1_ms if rows == 1 else self.decode_base_ms
            kv = sum(fb.seq_lens_cpu) * KV_BYTES_PER_TOKEN / (self.kv_read_tbs * 1e12) * 1e3
            return base + self.decode_per_row_ms * rows + kv
        tokens = sum(fb.extend_lens_cpu)
        attention = sum(self.attention_ms(p, e, self.mixed_decode_row_penalty if e == 1 and p > 0 else 1.0)
                        for p, e in zip(fb.prefix_lens_cpu, fb.extend_lens_cpu))
        return max(self.weight_floor_ms, self.prefill_per_token_ms * tokens) + attention

    def launch_ms(self, fb) -> float:
        if not fb.forward_mode.is_decode:
            return self.extend_launch_ms
        return self.decode_launch_ms if fb.batch_size <= self.graph_max_bs else self.eager_decode_launch_ms


class VirtualClock:
    """Host and GPU on one virtual timeline. The host advances by the scheduler's measured Python time
    (scaled) and by launches; a forward queues on the GPU behind the previous one; reading a step's
    results (`_commit` of an overlapped decode, `_process` of an in-order step) waits for that step's
    end, in launch order, which is where an unchained step leaves the GPU idle."""

    def __init__(self, cpu_scale: float) -> None:
        self.now_ms = 0.0  # the host's time
        self.gpu_free_ms = 0.0
        self.cpu_scale = cpu_scale
        self.pending_ends: list[float] = []
        self._wall = time.perf_counter()

    def catch_up(self) -> None:
        """Adds the host time spent in scheduler code since the last event."""
        wall = time.perf_counter()
        self.now_ms += (wall - self._wall) * 1e3 * self.cpu_scale
        self._wall = wall

    def resume(self) -> None:
        self._wall = time.perf_counter()

    def launch(self, launch_ms: float, gpu_ms: float) -> None:
        self.catch_up()
        start = max(self.now_ms, self.gpu_free_ms)
        self.now_ms += launch_ms
        self.gpu_free_ms = max(start + gpu_ms, self.now_ms)
        self.pending_ends.append(self.gpu_free_ms)
        self.resume()

    def sync(self) -> None:
        self.catch_up()
        if self.pending_ends:
            self.now_ms = max(self.now_ms, self.pending_ends.pop(0))
        self.resume()

    def idle_until(self, t_ms: float) -> None:
        self.now_ms = max(self.now_ms, t_ms)
        self.resume()


def fit_step_model(rows: list[dict], base: StepTimeModel | None = None) -> StepTimeModel:
    """The step-time model's GPU coefficients fitted to a TESSERA_STEP_TRACE (engine/step_trace.py):
    decode steps up to `base.graph_max_bs` rows (the traced run's graph size) by least squares on (1, rows,
    KV bytes) -> base, per-row time and KV bandwidth (batch-1 steps fit their own base); prefill steps of
    >= 256 tokens without decode rows riding along -> time per token. Coefficients a trace cannot determine keep `base`'s values."""
    import numpy as np

    model = base or StepTimeModel()
    changes: dict[str, float] = {}
    decode = [r for r in rows if r["mode"] == "decode" and r.get("gpu_ms") is not None]
    # Steps above the traced run's graph size ran eagerly: their CUDA-event time is mostly the GPU waiting for
    # host launches (35.5 vs 14.3 ms on the H200, 2026-12-03), which `launch_ms` models, not `gpu_ms`.
    batched = [r for r in decode if 1 < r["rows"] <= model.graph_max_bs]
    if len({r["rows"] for r in batched}) >= 3:
        a = np.array([[1.0, r["rows"], r["context"] * KV_BYTES_PER_TOKEN / 1e9] for r in batched])
        (intercept, per_row, ms_per_gb), *_ = np.linalg.lstsq(a, np.array([r["gpu_ms"] for r in batched]), rcond=None)
        changes.update(decode_base_ms=float(intercept), decode_per_row_ms=float(per_row))
        if ms_per_gb > 0:
            changes["kv_read_tbs"] = float(1.0 / ms_per_gb)  # ms per GB -> TB/s
    single = [r["gpu_ms"] for r in decode if r["rows"] == 1]
    if single:
        kv_ms = changes.get("kv_read_tbs", model.kv_read_tbs)
        contexts = [r["context"] for r in decode if r["rows"] == 1]
        changes["decode_base_bs1_ms"] = float(np.median([g - c * KV_BYTES_PER_TOKEN / (kv_ms * 1e9)
                                                         for g, c in zip(single, contexts)]))
    prefill = [r for r in rows if r["mode"] == "extend" and r.get("gpu_ms") is not None and r["tokens"] >= 256
               and r.get("one_token_rows", 0) == 0]
    if prefill:
        changes["prefill_per_token_ms"] = float(np.median([r["gpu_ms"] / r["tokens"] for r in prefill]))
    return dataclasses.replace(model, **{k: round(v, 6) for k, v in changes.items()})


def build_scheduler(engine_args: dict, model: StepTimeModel, clock: VirtualClock, on_msg) -> Scheduler:
    # The 8B shape's KV budget on an H200 at --mem-fraction-static 0.85: ~790k tokens. As on a GPU: up to
    # 1024 running requests, decode steps chained by overlap scheduling.
    os.environ[CPU_OVERLAP_ENV] = "1"
    args = ServerArgs(model_path=DEMO_MODEL, device="cpu", skip_tokenizer_init=True, context_length=2048,
                      max_total_tokens=790_000, max_running_requests=1024, random_seed=0, **engine_args)
    runner = ModelRunner(args, create_model_config(args, "cpu"), TPContext(), torch.device("cpu"))
    vocab = runner.model_config.vocab_size
    # An H200 (141 GB): the engine's own default when --cuda-graph-max-bs is not given.
    graph_max_bs = args.cuda_graph_max_bs or default_graph_max_bs(141 * 1000**3)
    model = dataclasses.replace(model, graph_max_bs=graph_max_bs)
    runner.chunked_prefill_size = args.chunked_prefill_size or default_chunked_prefill_size(141 * 1000**3)
    scheduler = Scheduler(args, runner, TPContext(), None, [], on_msg)

    def forward(fb, fp32: bool = True) -> torch.Tensor:  # ModelRunner.forward's signature; the dtype is moot here
        clock.launch(model.launch_ms(fb), model.gpu_ms(fb))
        logits = torch.zeros(fb.logits_indices.numel(), vocab)
        clock.resume()  # the stand-in logits are not the scheduler's host time
        return logits

    def synced(method):
        def call(*a, **kw):
            clock.sync()
            return method(*a, **kw)
        return call

    runner.forward = forward  # type: ignore[method-assign]
    scheduler._commit = synced(scheduler._commit)  # type: ignore[method-assign]
    scheduler._process = synced(scheduler._process)  # type: ignore[method-assign]
    return scheduler


def simulate(engine_args: dict, rate: float, num_prompts: int, min_in: int, max_in: int, output_len: int,
             model: StepTimeModel, seed: int = 0) -> dict:
    clock = VirtualClock(model.cpu_scale)
    token_times: dict[str, list[float]] = {}
    finished: dict[str, float] = {}

    def on_msg(msg) -> None:
        if not isinstance(msg, BatchOutMsg):
            return
        clock.catch_up()
        for out in msg.outputs:
            if out.new_token_ids:
                token_times[out.rid].append(clock.now_ms)
            if out.finished:
                finished[out.rid] = clock.now_ms
        clock.resume()

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
    clock.resume()
    while pending or scheduler.has_work:
        clock.catch_up()
        while pending and pending[0][0] <= clock.now_ms:
            at, rid, prompt = pending.pop(0)
            arrived[rid], token_times[rid] = at, []
            scheduler.handle(GenerateReqMsg(rid=rid, input_ids=prompt, sampling=dict(sampling), stream=True))
        if not scheduler.has_work:
            clock.idle_until(pending[0][0])
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
    return (f"{label:<40} ITL median {r['itl']['median_ms']:7.1f} mean {r['itl']['mean_ms']:6.1f} p99 "
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
    parser.add_argument("--calibrate", action="store_true", help="the measured H200 schedules, side by side")
    parser.add_argument("--fit", nargs="+", metavar="TRACE",
                        help="fit the GPU step times to TESSERA_STEP_TRACE files first (then simulate with them)")
    ns = parser.parse_args()
    try:  # bad input is one line, before any simulation runs
        model = StepTimeModel(**json.loads(ns.model))
        schedules = [json.loads(spec) for spec in ns.engine_args or ["{}"]]
        for extra in schedules:
            ServerArgs.from_dict({"model_path": DEMO_MODEL, "device": "cpu", **extra})
        traces = [json.loads(text) for path in ns.fit or [] for text in open(path) if text.strip()]
    except (OSError, ValueError, TypeError) as exc:  # JSONDecodeError and ArgsError are ValueErrors
        sys.exit(f"schedule_sim: error: {exc}".splitlines()[0])
    if traces:
        model = fit_step_model(traces, model)
        print("fitted model: " + json.dumps(dataclasses.asdict(model)), flush=True)
    common = (ns.request_rate, ns.num_prompts, ns.min_input_len, ns.max_input_len, ns.output_len, model)
    if ns.calibrate:
        for extra, measured in measured_runs():
            label = json.dumps(extra)
            # measured when 256-row decode graphs, 8192-token chunks and no interleaving were the defaults
            then = {"cuda_graph_max_bs": 256, "chunked_prefill_size": 8192, "interleave_prefill_tokens": 0,
                    "interleave_backlog_tokens": 0}
            print(line(f"{label} (sim)", simulate({**then, **extra}, *common)), flush=True)
            print(line(f"{label} (H200)", measured), flush=True)
        return
    for extra in schedules:
        r = simulate(extra, *common)
        print(line(json.dumps(extra), r), flush=True)
        print("SIM " + json.dumps(r), flush=True)

if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C: the partial run has nothing worth printing
