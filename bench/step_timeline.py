"""Where a batch-1 decode step's time goes on the GPU's own clock: every kernel's start and end across CUDA-graph
replays (torch.profiler's CUPTI trace), then each kernel's share of the step as the time by which it moves the
end of the work done so far ("advance"). Per-kernel GPU time (bench/profile_step.py's table) double-counts
kernels that overlap under PDL / early triggers; advances sum to the step's span exactly, so they say which kernel
the step waits for.

    python bench/step_timeline.py --engine-args '{"quantization": "fp8", "lm_head_quantization": "fp8"}'

Kernels are keyed by name and grid (the four GEMVs of a layer share a name); rows per step = launches per step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.profile_step import _batch, batch1_runner, engine_args_json  # noqa: E402
from engine.forward_batch import ForwardMode  # noqa: E402


def kernel_events(trace_path: str) -> list[dict]:
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel" and "dur" in e]
    return sorted(kernels, key=lambda e: e["ts"])


def _key(event: dict) -> str:
    grid = event.get("args", {}).get("grid")
    name = event["name"].split("(")[0]
    return f"{name[:44]} {tuple(grid) if grid else ''}"


def _keys(step: list[dict], layers: int) -> list[str]:
    """Each launch's key, numbered by its place in the layer where a key repeats per layer (o and down share a name
    and a grid: #0 is the earlier in the layer)."""
    totals: dict[str, int] = defaultdict(int)
    for e in step:
        totals[_key(e)] += 1
    seen: dict[str, int] = defaultdict(int)
    keys = []
    for e in step:
        key = _key(e)
        per_layer = totals[key] // layers if totals[key] % layers == 0 else 0
        keys.append(f"{key} #{seen[key] % per_layer}" if per_layer > 1 else key)
        seen[key] += 1
    return keys


def attribute(kernels: list[dict], steps: int, layers: int) -> tuple[dict, list[float]]:
    """Per kernel key: launches, summed duration, advance, idle before it and lead (start minus the end of the work
    before it: negative when it starts early), per step; and each step's span."""
    per_step = len(kernels) // steps
    assert per_step * steps == len(kernels), f"{len(kernels)} kernels do not split into {steps} equal steps"
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    spans = []
    for s in range(steps):
        step = kernels[s * per_step:(s + 1) * per_step]
        frontier = step[0]["ts"]
        for e, key in zip(step, _keys(step, layers)):
            end = e["ts"] + e["dur"]
            row = rows[key]
            row["launches"] += 1 / steps
            row["lead"] += (e["ts"] - frontier) / steps
            row["dur"] += e["dur"] / steps
            row["idle_before"] += max(0.0, e["ts"] - frontier) / steps
            row["advance"] += max(0.0, end - max(frontier, e["ts"])) / steps
            frontier = max(frontier, end)
        spans.append(frontier - step[0]["ts"])
    return rows, spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--context", type=int, default=640)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--engine-args", default="{}")
    ns = parser.parse_args()
    extra = engine_args_json(parser, ns.engine_args)
    if ns.steps < 1 or ns.context < 2:
        parser.error("--steps >= 1, --context >= 2")
    if not torch.cuda.is_available():
        sys.exit("step_timeline.py: needs a CUDA GPU")
    runner = batch1_runner(ns.model, ns.context, extra)
    fb = _batch(runner, [ns.context - 1], [1], ForwardMode.DECODE)
    for _ in range(20):
        runner.forward(fb)
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(ns.steps):
            runner.forward(fb)
            torch.cuda.synchronize()  # steps apart: each step's span is its own
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        kernels = kernel_events(path)
    rows, spans = attribute(kernels, ns.steps, runner.model_config.num_layers)
    spans.sort()
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("TESSERA_"))
    print(f"engine args {ns.engine_args} {env}; {len(kernels) // ns.steps} kernels per step; step span median "
          f"{spans[len(spans) // 2]:.1f} us (min {spans[0]:.1f}, max {spans[-1]:.1f})")
    print(f"{'kernel (grid)':<64} {'n/step':>6} {'dur/step':>9} {'adv/step':>9} {'idle/step':>9} {'adv/launch':>10} {'dur/launch':>10} {'lead/launch':>11}")
    for key, row in sorted(rows.items(), key=lambda kv: -kv[1]["advance"]):
        print(f"{key:<64} {row['launches']:6.0f} {row['dur']:9.1f} {row['advance']:9.1f} {row['idle_before']:9.1f} "
              f"{row['advance'] / max(row['launches'], 1e-9):10.2f} {row['dur'] / max(row['launches'], 1e-9):10.2f} "
              f"{row['lead'] / max(row['launches'], 1e-9):11.2f}")
    total = {k: sum(r[k] for r in rows.values()) for k in ("dur", "advance", "idle_before")}
    print(f"{'total':<64} {'':>6} {total['dur']:9.1f} {total['advance']:9.1f} {total['idle_before']:9.1f}")
    out = os.environ.get("OUT")
    if out:
        tag = "-".join(str(v) for v in extra.values()) or "bf16"
        path = os.path.join(out, f"timeline-{tag}.json")
        for i in range(2, 100):  # variants of one format (env settings) each keep their file
            if not os.path.exists(path):
                break
            path = os.path.join(out, f"timeline-{tag}-{i}.json")
        with open(path, "w") as f:
            json.dump({"engine_args": extra, "env": env, "spans_us": spans, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
