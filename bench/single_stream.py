"""Single-stream latency: one request at a time, 512 input tokens, 256 output tokens, ignore_eos.

    python bench/single_stream.py --model-path bench/models/llama-3.1-8b --load-format dummy
    python bench/single_stream.py --quantization awq   # AWQ-shaped dummy weights (int4, group 128)

Streams the output so TTFT and the decode rate are separate numbers: decode tok/s counts the tokens
after the first over the time after the first. Median of `--runs` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.workloads import random_prompt  # noqa: E402


def measure_stream(engine, prompt: list[int], output_len: int) -> dict[str, float]:
    params = {"max_new_tokens": output_len, "temperature": 0, "ignore_eos": True}
    t0 = time.perf_counter()
    first = None
    num = 0
    for chunk in engine.generate(input_ids=prompt, sampling_params=params, stream=True):
        if chunk["output_ids"] and first is None:
            first = time.perf_counter()
        num += len(chunk["output_ids"])
    end = time.perf_counter()
    first = first or end
    decode_s = end - first
    return {"ttft_ms": (first - t0) * 1e3, "decode_tok_s": (num - 1) / decode_s if decode_s > 0 else 0.0,
            "e2e_s": end - t0, "output_tokens": num}


def run_single_stream(engine, vocab: int, input_len: int = 512, output_len: int = 256, runs: int = 3,
                      seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    measure_stream(engine, random_prompt(rng, input_len, vocab), 16)  # warm-up
    # On the device a whole process took ~2 minutes for seconds of runs (bench/NOTES.md): say where it goes.
    print(f"single stream: warm-up request {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    results = []
    for _ in range(runs):
        engine.flush_cache()  # every run prefills its whole prompt
        results.append(measure_stream(engine, random_prompt(rng, input_len, vocab), output_len))
    return {
        "decode_tok_s": round(statistics.median(r["decode_tok_s"] for r in results), 1),
        "ttft_ms": round(statistics.median(r["ttft_ms"] for r in results), 1),
        "e2e_s": round(statistics.median(r["e2e_s"] for r in results), 3),
        "runs": [{k: round(v, 2) for k, v in r.items()} for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="bench/models/llama-3.1-8b")
    parser.add_argument("--load-format", default="dummy")
    parser.add_argument("--input-len", type=int, default=512)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quantization", choices=["awq", "fp8"], default=None,
                        help="weight quantization; with --load-format dummy, random weights in that format")
    parser.add_argument("--engine-args", default="{}", help="JSON of extra ServerArgs fields")
    ns = parser.parse_args()
    engine_args = json.loads(ns.engine_args)
    if ns.quantization:
        engine_args["quantization"] = ns.quantization

    from engine import Engine
    from engine.model_config import load_hf_config

    vocab = load_hf_config(ns.model_path).vocab_size
    t0 = time.perf_counter()
    with Engine(model_path=ns.model_path, load_format=ns.load_format, skip_tokenizer_init=True,
                **engine_args) as engine:
        print(f"single stream: engine start {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        result = run_single_stream(engine, vocab, ns.input_len, ns.output_len, ns.runs)
        t1 = time.perf_counter()
    print(f"single stream: engine stop {time.perf_counter() - t1:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
