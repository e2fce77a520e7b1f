"""Where a batch-1 token's time goes on the GPU between one decode graph replay and the next, through the
scheduler's real step (overlap scheduling on, one streamed greedy request): the graph's span, every GPU op the
step queues outside the graph (input copies, the KV index store, sampling, the token's copy back) and the idle
time between them. bench/step_timeline.py looks inside the graph; this looks at what surrounds it.

    python bench/token_timeline.py --engine-args '{"quantization": "fp8", "lm_head_quantization": "fp8"}'

A graph replay is found by its CUDA runtime call (cudaGraphLaunch): the GPU ops carrying that call's correlation
id are the graph's; everything else started before the next replay belongs to the token in between.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.profile_step import engine_args_json  # noqa: E402
from engine.args import ServerArgs  # noqa: E402
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.messages import GenerateReqMsg  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402
from engine.scheduler import Scheduler  # noqa: E402

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def gpu_ops_by_token(trace_path: str) -> list[dict]:
    """Per graph replay but the last: its span, the next replay's distance (the token's period) and the GPU ops
    outside the graph started in between (name, duration)."""
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    graph_ids = {e["args"]["correlation"] for e in events
                 if e.get("name") == "cudaGraphLaunch" and "correlation" in e.get("args", {})}
    ops = sorted((e for e in events if e.get("cat") in GPU_CATEGORIES and "dur" in e), key=lambda e: e["ts"])
    replays: dict[int, list[dict]] = defaultdict(list)
    for e in ops:
        corr = e.get("args", {}).get("correlation")
        if corr in graph_ids:
            replays[corr].append(e)
    starts = sorted((min(k["ts"] for k in ks), max(k["ts"] + k["dur"] for k in ks), corr)
                    for corr, ks in replays.items())
    tokens = []
    for (start, end, corr), (next_start, _, _) in zip(starts, starts[1:]):
        outside = [{"name": e["name"].split("(")[0][:60], "dur": e["dur"], "ts": e["ts"]} for e in ops
                   if start <= e["ts"] < next_start and e.get("args", {}).get("correlation") != corr]
        tokens.append({"period": next_start - start, "span": end - start, "outside": outside})
    return tokens


def summarize(tokens: list[dict]) -> str:
    """Medians per token: period, graph span, outside ops by name (count and duration), GPU idle outside the graph."""
    med = statistics.median
    period, span = med(t["period"] for t in tokens), med(t["span"] for t in tokens)
    by_name: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(list)
    busy = []
    names = {op["name"] for t in tokens for op in t["outside"]}
    for t in tokens:
        per: dict[str, float] = defaultdict(float)
        n: dict[str, int] = defaultdict(int)
        for op in t["outside"]:
            per[op["name"]] += op["dur"]
            n[op["name"]] += 1
        for name in names:
            by_name[name].append(per.get(name, 0.0))
            counts[name].append(n.get(name, 0))
        busy.append(sum(op["dur"] for op in t["outside"]))
    lines = [f"{len(tokens)} tokens: period median {period:.1f} us, graph span {span:.1f} us, outside the graph "
             f"{period - span:.1f} us (GPU busy {med(busy):.1f} us, idle {period - span - med(busy):.1f} us)",
             f"{'op outside the graph':<62} {'n/token':>7} {'us/token':>9}"]
    for name, durs in sorted(by_name.items(), key=lambda kv: -med(kv[1])):
        lines.append(f"{name:<62} {med(counts[name]):7.0f} {med(durs):9.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--input-len", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=48, help="decode tokens profiled (after 32 warm ones)")
    parser.add_argument("--engine-args", default="{}")
    ns = parser.parse_args()
    extra = {"attention_backend": "triton", "cuda_graph_max_bs": 1, **engine_args_json(parser, ns.engine_args)}
    if ns.tokens < 2 or ns.input_len < 1:
        parser.error("--tokens >= 2, --input-len >= 1")
    if not torch.cuda.is_available():
        sys.exit("token_timeline.py: needs a CUDA GPU")
    args = ServerArgs(model_path=ns.model, load_format="dummy", skip_tokenizer_init=True, max_running_requests=4,
                      **extra)
    runner = ModelRunner(args, create_model_config(args, "cuda"), TPContext(), torch.device("cuda", 0))
    scheduler = Scheduler(args, runner, TPContext(), None, [], lambda msg: None)
    vocab = runner.model_config.vocab_size
    rng = random.Random(0)
    warm = 32
    scheduler.handle(GenerateReqMsg(rid="timeline", input_ids=[rng.randrange(vocab) for _ in range(ns.input_len)],
                                    sampling={"max_new_tokens": warm + ns.tokens + 16, "temperature": 0,
                                              "ignore_eos": True}, stream=True))
    while scheduler.num_generated < warm:
        scheduler.step()
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        while scheduler.num_generated < warm + ns.tokens:
            scheduler.step()
        torch.cuda.synchronize()
    while scheduler.has_work:
        scheduler.step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        tokens = gpu_ops_by_token(path)
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("TESSERA_"))
    print(f"engine args {json.dumps(extra)} {env}")
    print(summarize(tokens) if tokens else "no graph replays in the trace (CUDA graphs off?)")


if __name__ == "__main__":
    main()
