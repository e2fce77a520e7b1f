"""Offline throughput through `engine.Engine` (DESIGN.md's workload by default).

256 requests, input lengths uniform in [256, 1024], 256 output tokens each, ignore_eos; random
token ids so no tokenizer is needed. Prints output tokens/s on whatever device is present.

    .venv/bin/python bench/offline.py                                   # demo model, CPU-sized run
    python bench/offline.py --model-path bench/models/llama-3.1-8b --load-format dummy \
        --num-prompts 256 --min-input 256 --max-input 1024 --output-len 256
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_workload(num: int, min_in: int, max_in: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(100, vocab - 1) for _ in range(rng.randint(min_in, max_in))] for _ in range(num)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--num-prompts", type=int, default=None)
    parser.add_argument("--min-input", type=int, default=None)
    parser.add_argument("--max-input", type=int, default=None)
    parser.add_argument("--output-len", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine-args", default="{}", help="JSON of extra ServerArgs fields")
    ns = parser.parse_args(argv)

    import torch

    from engine import Engine
    from engine.model_config import load_hf_config

    on_gpu = torch.cuda.is_available()
    # DESIGN.md's workload on a GPU; a scaled-down one on CPU so the script finishes in a minute.
    num = ns.num_prompts or (256 if on_gpu else 16)
    min_in = ns.min_input or (256 if on_gpu else 32)
    max_in = ns.max_input or (1024 if on_gpu else 128)
    out_len = ns.output_len or (256 if on_gpu else 32)
    engine_kwargs = {"load_format": ns.load_format, "skip_tokenizer_init": True, **json.loads(ns.engine_args)}
    if ns.model_path:
        engine_kwargs["model_path"] = ns.model_path
    with Engine(**engine_kwargs) as engine:
        vocab = load_hf_config(engine.server_args.model_path).vocab_size
        prompts = make_workload(num, min_in, max_in, vocab, ns.seed)
        params = {"max_new_tokens": out_len, "temperature": 0, "ignore_eos": True}
        engine.generate(input_ids=prompts[:2], sampling_params={**params, "max_new_tokens": 4})  # warm-up
        engine.flush_cache()
        t0 = time.perf_counter()
        outs = engine.generate(input_ids=prompts, sampling_params=params)
        elapsed = time.perf_counter() - t0
        info = engine.get_server_info()
    out_tokens = sum(len(o["output_ids"]) for o in outs)
    in_tokens = sum(len(p) for p in prompts)
    result = {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "model": engine.server_args.model_path, "num_prompts": num, "input_tokens": in_tokens,
        "output_tokens": out_tokens, "elapsed_s": round(elapsed, 3),
        "output_tok_per_s": round(out_tokens / elapsed, 1),
        "total_tok_per_s": round((in_tokens + out_tokens) / elapsed, 1),
        "retractions": info.get("num_retractions"), "attention_backend": info.get("attention_backend"),
    }
    print(json.dumps(result))
    print(f"offline throughput: {result['output_tok_per_s']} output tok/s "
          f"({num} requests, {in_tokens} in / {out_tokens} out tokens, {elapsed:.1f}s)")
    return result


if __name__ == "__main__":
    main()
