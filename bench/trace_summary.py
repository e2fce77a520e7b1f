"""Where a long prompt's TTFT goes, from a step trace (`TESSERA_STEP_TRACE`, engine/step_trace.py): for the
last prompt of at least --min-tokens in the trace, its prefill chunks with their GPU time and the host time
from each launch to the next, then the chunks' GPU total against the host window from the first chunk's
launch to the first decode's launch (the difference is time the GPU waited for the host or ran other work).

    python bench/trace_summary.py $OUT/trace-100k.jsonl
"""

from __future__ import annotations

import argparse
import json


def last_prompt(rows: list[dict], min_tokens: int) -> tuple[list[dict], dict | None]:
    """The extend steps of the last run of consecutive one-row extends whose prompt reached min_tokens, and the
    forward that followed them (the request's first decode, when the trace has it)."""
    runs, current = [], []
    for i, r in enumerate(rows):
        if r["mode"] == "extend" and r["rows"] == 1:
            current.append(i)
            continue
        if current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    for run in reversed(runs):
        if rows[run[-1]]["context"] >= min_tokens:
            after = run[-1] + 1
            return [rows[i] for i in run], (rows[after] if after < len(rows) else None)
    return [], None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace")
    parser.add_argument("--min-tokens", type=int, default=65536)
    args = parser.parse_args()
    try:
        with open(args.trace) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as exc:  # missing file, or not a TESSERA_STEP_TRACE (one JSON object per line)
        raise SystemExit(f"trace_summary: cannot read {args.trace}: {exc}") from None
    chunks, after = last_prompt(rows, args.min_tokens)
    if not chunks:
        raise SystemExit(f"no prompt of {args.min_tokens}+ tokens in {args.trace}")
    t0 = chunks[0]["t"]
    print(f"{'chunk':>5} {'tokens':>7} {'context':>8} {'launch_ms':>10} {'gpu_ms':>9} {'to_next_launch_ms':>18}")
    following = chunks[1:] + ([after] if after else [])
    for i, r in enumerate(chunks):
        nxt = following[i]["t"] if i < len(following) else None
        gap = f"{(nxt - r['t']) * 1e3:18.1f}" if nxt is not None else f"{'-':>18}"
        print(f"{i:5d} {r['tokens']:7d} {r['context']:8d} {(r['t'] - t0) * 1e3:10.1f} {r['gpu_ms']:9.1f} {gap}")
    gpu = sum(r["gpu_ms"] for r in chunks)
    line = f"chunks: {len(chunks)}, {sum(r['tokens'] for r in chunks)} tokens, GPU {gpu:.1f} ms"
    if after:
        window = (after["t"] - t0) * 1e3
        line += (f"; first chunk launch -> next forward launch ({after['mode']}, GPU {after['gpu_ms']:.1f} ms) "
                 f"{window:.1f} ms: {window - gpu:.1f} ms not in the chunks' GPU time")
    print(line)


if __name__ == "__main__":
    main()
