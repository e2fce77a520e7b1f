"""Inside the batch-1 early-KV decode attention, in the engine's own graph-replayed step: each program's %globaltimer
at its start, before its PDL wait (the early loads issued), after the wait (the qkv GEMV done) and at its end, and its
SM (`kernels/decode_stamps.py`, a debug hook the engine never sets).

    python bench/attention_stamps.py --engine-args '{"quantization": "fp8", "lm_head_quantization": "fp8"}'

bench/step_timeline.py says how long the step waits for the attention after the qkv GEMV (9.7 us per layer for FP8,
7.1 for bf16 on an H100); this says where those microseconds are: programs that start late (no SM room, or the PDL
launch), a long wait (the GEMV's tail), or a long post-wait chain (q, the dots, the partials and the merge).
Times in us, per layer, averaged over the layers (medians over the active programs where a figure is per program).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.profile_step import _batch, batch1_runner, engine_args_json  # noqa: E402
from engine.forward_batch import ForwardMode  # noqa: E402
from kernels import decode_stamps  # noqa: E402


def layer_figures(stamps: torch.Tensor) -> dict[str, float] | None:
    """One launch's programs [programs, 5] (ns; rows of inactive programs are zero) -> its figures in us."""
    rows = [r for r in stamps.tolist() if r[0] != 0]
    if not rows:
        return None
    start, before, after, end = ([r[i] for r in rows] for i in range(4))
    us = 1e-3
    return {
        "programs": len(rows),
        "sms": len({r[4] for r in rows}),
        "start_spread": (max(start) - min(start)) * us,
        "early_part": statistics.median(b - s for s, b in zip(start, before)) * us,
        "wait": statistics.median(a - b for b, a in zip(before, after)) * us,
        "first_wait_return_after_last_start": (min(after) - max(start)) * us,
        "after_wait": statistics.median(e - a for a, e in zip(after, end)) * us,
        "last_end_after_first_wait_return": (max(end) - min(after)) * us,
        "span": (max(end) - min(start)) * us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--context", type=int, default=640)
    parser.add_argument("--engine-args", default="{}")
    ns = parser.parse_args()
    extra = engine_args_json(parser, ns.engine_args)
    if ns.context < 2:
        parser.error("--context: at least 2 tokens")
    if not torch.cuda.is_available():
        sys.exit("attention_stamps.py: needs a CUDA GPU")
    runner = batch1_runner(ns.model, ns.context, extra)
    programs = runner.model_config.num_kv_heads * 32  # >= kv heads x the batch-1 split cap
    decode_stamps.set_buffers([torch.zeros(programs, len(decode_stamps.FIELDS), dtype=torch.int64, device="cuda")
                               for _ in range(runner.model_config.num_layers)])
    runner.graph_runner = None  # capture again, now with the stamps (one buffer per layer, in launch order)
    gc.collect()
    runner.graph_runner = runner._create_graph_runner()
    fb = _batch(runner, [ns.context - 1], [1], ForwardMode.DECODE)
    for _ in range(20):
        runner.forward(fb)
    torch.cuda.synchronize()
    figures = [f for f in (layer_figures(s) for s in decode_stamps.STAMPS) if f is not None]
    if not figures:
        sys.exit("attention_stamps.py: no stamps written (early KV off, or not a Hopper GPU?)")
    mean = {key: statistics.mean(f[key] for f in figures) for key in figures[0]}
    print(f"engine args {ns.engine_args}; {len(figures)} layers with stamps, context {ns.context}")
    for key, value in mean.items():
        print(f"{key:<36} {value:8.2f}")
    out = os.environ.get("OUT")
    if out:
        tag = "-".join(str(v) for v in extra.values()) or "bf16"
        with open(os.path.join(out, f"attention-stamps-{tag}.json"), "w") as f:
            json.dump({"engine_args": extra, "mean": mean, "layers": figures}, f, indent=1)


if __name__ == "__main__":
    main()
