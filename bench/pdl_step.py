"""Batch-1 decode step with programmatic dependent launch off and on (kernels/pdl.py), in one process.

    python bench/pdl_step.py --model bench/models/llama-3.1-8b --quantizations fp8,bf16

For each weight format one model runner is built (dummy weights, triton attention, `--context` cached tokens);
its decode CUDA graphs are captured again with PDL off, then on, `--rounds` times in turn, and each capture's
graph-replayed step is timed by CUDA events (median of `--reps`). Alternating the captures on one runner keeps
clock drift and machine-to-machine variance out of the difference, and spares a second model load and Triton
compile per configuration. The logits of every PDL-on capture must equal the PDL-off ones bit for bit: PDL
changes when kernels start, never what they compute.
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

from bench.profile_step import _batch  # noqa: E402
from bench.roofline import median_ms  # noqa: E402
from engine.args import ServerArgs  # noqa: E402
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.forward_batch import ForwardMode  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402
from kernels import pdl  # noqa: E402


def _measure(model: str, quantization: str, context: int, rounds: int, reps: int) -> dict:
    extra = {} if quantization == "bf16" else {"quantization": quantization}
    args = ServerArgs(model_path=model, load_format="dummy", skip_tokenizer_init=True, attention_backend="triton",
                      cuda_graph_max_bs=1, max_running_requests=1, max_total_tokens=max(16384, 2 * context),
                      context_length=max(8192, context + 1), **extra)
    runner = ModelRunner(args, create_model_config(args, "cuda"), TPContext(), torch.device("cuda", 0))
    fb = _batch(runner, [context - 1], [1], ForwardMode.DECODE)
    times: dict[bool, list[float]] = {False: [], True: []}
    reference = None
    identical = True
    for _ in range(rounds):
        for on in (False, True):
            pdl.set_enabled(on)
            runner.graph_runner = None  # the old graphs go before the new ones are captured
            gc.collect()
            runner.graph_runner = runner._create_graph_runner()
            logits = runner.forward(fb).clone()
            if reference is None:
                reference = logits
            identical &= bool(torch.equal(logits, reference))
            times[on].append(median_ms(lambda: runner.forward(fb), reps))
    pdl.set_enabled(None)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {"quantization": quantization, "off_ms": round(off, 4), "on_ms": round(on, 4),
            "delta_ms": round(on - off, 4), "delta_pct": round(100 * (on - off) / off, 2),
            "off_runs": [round(t, 4) for t in times[False]], "on_runs": [round(t, 4) for t in times[True]],
            "logits_identical": identical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--quantizations", default="fp8,bf16", help="comma-separated: bf16, fp8, awq")
    parser.add_argument("--context", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=200)
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("pdl_step.py: needs a CUDA GPU")
    if not pdl.HAS_GDC or torch.cuda.get_device_capability() < (9, 0):
        sys.exit("pdl_step.py: PDL needs an sm_90+ GPU and Triton >= 3.4")
    rows = []
    for q in ns.quantizations.split(","):
        row = _measure(ns.model, q.strip(), ns.context, ns.rounds, ns.reps)
        print("PDL_STEP " + json.dumps(row), flush=True)
        rows.append(row)
        gc.collect()  # this runner's model, KV pool and graphs go before the next one is built
        torch.cuda.empty_cache()
    print(f"{'weights':8} {'off ms':>8} {'on ms':>8} {'delta':>8} identical")
    for r in rows:
        print(f"{r['quantization']:8} {r['off_ms']:8.4f} {r['on_ms']:8.4f} {r['delta_pct']:7.2f}% {r['logits_identical']}")
    if not all(r["logits_identical"] for r in rows):
        sys.exit("pdl_step.py: PDL changed the logits")


if __name__ == "__main__":
    main()
