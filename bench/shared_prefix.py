"""Shared prefix: 16 groups x 32 requests, 2048-token shared system prompt + 128-token question,
256 output tokens, ignore_eos; radix cache on vs off (two engines, same flags otherwise).

    python bench/shared_prefix.py --model-path bench/models/llama-3.1-8b --load-format dummy

All requests are submitted at once in group order. The cache hit rate is the engine's own counter
(prompt tokens served from the radix cache / prompt tokens looked up) over this run only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.workloads import shared_prefix_prompts  # noqa: E402


def run_shared_prefix(engine, prompts: list[list[int]], output_len: int = 256) -> dict[str, float]:
    params = {"max_new_tokens": output_len, "temperature": 0, "ignore_eos": True}
    engine.flush_cache()
    before = engine.get_server_info()
    t0 = time.perf_counter()
    outs = engine.generate(input_ids=prompts, sampling_params=params)
    elapsed = time.perf_counter() - t0
    after = engine.get_server_info()
    queried = after["cache_query_tokens"] - before["cache_query_tokens"]
    hits = after["cache_hit_tokens"] - before["cache_hit_tokens"]
    out_tokens = sum(len(o["output_ids"]) for o in outs)
    return {"elapsed_s": round(elapsed, 2), "output_tok_s": round(out_tokens / elapsed, 1),
            "cache_hit_rate": round(hits / queried, 4) if queried else 0.0,
            "cached_tokens_reported": sum(o["meta_info"]["cached_tokens"] for o in outs),
            "retractions": after.get("num_retractions", 0) - before.get("num_retractions", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="bench/models/llama-3.1-8b")
    parser.add_argument("--load-format", default="dummy")
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--per-group", type=int, default=32)
    parser.add_argument("--prefix-len", type=int, default=2048)
    parser.add_argument("--question-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--engine-args", default="{}", help="JSON of extra ServerArgs fields")
    ns = parser.parse_args()

    from engine import Engine
    from engine.model_config import load_hf_config

    vocab = load_hf_config(ns.model_path).vocab_size
    prompts = shared_prefix_prompts(ns.groups, ns.per_group, ns.prefix_len, ns.question_len, vocab)
    results = {}
    for name, disable in (("radix_on", False), ("radix_off", True)):
        with Engine(model_path=ns.model_path, load_format=ns.load_format, skip_tokenizer_init=True,
                    disable_radix_cache=disable, **json.loads(ns.engine_args)) as engine:
            results[name] = run_shared_prefix(engine, prompts, ns.output_len)
    results["speedup"] = round(results["radix_off"]["elapsed_s"] / results["radix_on"]["elapsed_s"], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
