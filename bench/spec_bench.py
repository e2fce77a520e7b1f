"""Speculative decoding: decode tokens/s with and without speculation, acceptance rate.

    # CPU, the demo pair (trained weights: acceptance rates mean something)
    python bench/spec_bench.py --model-path models/demo --draft models/demo-draft --device cpu
    # GPU, 8B shape with dummy weights: mechanics overhead at ~0 % acceptance and the ngram workload
    python bench/spec_bench.py --model-path bench/models/llama-3.1-8b --load-format dummy \\
        --modes base,wrong,ngram --workloads random,repetitive

Modes: `base` (no speculation), `draft` (--draft model), `ngram` (prompt lookup), `wrong` (a proposer
that always proposes one fixed token, so ~0 % is accepted: what speculation costs when it buys
nothing, with the default pausing of failing requests), `wrong-raw` (the same with
`--speculative-min-accept-rate 0`: every step verifies, the bare mechanics' overhead). Workloads: `text` (prose prompts through the model's tokenizer), `random` (random token
ids), `repetitive` (a 64-token block repeated: prompt lookup finds the continuation in the prompt).
With `--batch 1` each prompt is streamed and decode tok/s counts tokens after the first over the time
after the first; with `--batch N` N prompts run together and tok/s is output tokens over wall time.
With dummy weights an acceptance rate says nothing about real models: only the mechanics are measured.
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

from bench.single_stream import measure_stream  # noqa: E402
from bench.workloads import random_prompt  # noqa: E402

TEXT_PROMPTS = ["The list", "A function is", "In the beginning the interpreter", "The dictionary maps",
                "Exceptions are raised when", "A class defines"]

REPEATED_TEXT = [
    "A list is a mutable sequence of items. The function returns a new list and leaves the old one alone.",
    "The dictionary maps keys to values. A key must be hashable, and each key appears at most once.",
    "Strings can be indexed and sliced; the result is a new string, because strings are immutable.",
]


def make_prompts(workload: str, model_path: str, vocab: int, num: int, input_len: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    if workload == "text":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path)
        return [tok(TEXT_PROMPTS[i % len(TEXT_PROMPTS)])["input_ids"] for i in range(num)]
    if workload == "random":
        return [random_prompt(rng, input_len, vocab) for _ in range(num)]
    if workload == "repetitive" and os.path.isfile(os.path.join(model_path, "tokenizer.json")):
        # a trained model copies repeated prose; prompt lookup finds the continuation in the prompt
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path)
        return [tok(" ".join([REPEATED_TEXT[i % len(REPEATED_TEXT)]] * 3))["input_ids"] for i in range(num)]
    if workload == "repetitive":
        prompts = []
        for _ in range(num):
            block = random_prompt(rng, 64, vocab)
            prompts.append((block * (input_len // 64 + 1))[:input_len])
        return prompts
    raise SystemExit(f"unknown workload {workload}")


def mode_args(mode: str, ns) -> tuple[dict, dict]:
    """(ServerArgs extras, environment) for one mode."""
    k = ns.k
    if mode == "base":
        return {}, {}
    if mode == "draft":
        return {"speculative_model": ns.draft, "speculative_num_draft_tokens": k}, {}
    if mode == "ngram":
        return {"speculative_algorithm": "ngram", "speculative_num_draft_tokens": k}, {}
    if mode in ("wrong", "wrong-raw"):  # wrong-raw: no pausing, every step verifies
        extra = {"speculative_algorithm": "ngram", "speculative_num_draft_tokens": k}
        if mode == "wrong-raw":
            extra["speculative_min_accept_rate"] = 0.0
        return extra, {"TESSERA_SPEC_FIXED_DRAFT_TOKEN": str(ns.wrong_token)}
    raise SystemExit(f"unknown mode {mode}")


def run_mode(mode: str, ns, vocab: int, workloads: list[str]) -> list[dict]:
    from engine import Engine

    extra, env = mode_args(mode, ns)
    os.environ.update(env)
    rows = []
    try:
        with Engine(model_path=ns.model_path, load_format=ns.load_format, device=ns.device, random_seed=0,
                    skip_tokenizer_init=ns.load_format == "dummy", **extra, **json.loads(ns.engine_args)) as engine:
            for workload in workloads:
                prompts = make_prompts(workload, ns.model_path, vocab, ns.num_prompts, ns.input_len, ns.seed)
                measure_stream(engine, prompts[0], 8)  # warm-up
                rows.append({"mode": mode, "workload": workload, **measure(engine, prompts, ns)})
    finally:
        for key in env:
            os.environ.pop(key, None)
    return rows


def measure(engine, prompts: list[list[int]], ns) -> dict:
    params = {"max_new_tokens": ns.output_len, "temperature": 0, "ignore_eos": True}
    before = engine.get_server_info()
    if ns.batch == 1:
        rates = []
        for p in prompts:
            engine.flush_cache()
            rates.append(measure_stream(engine, p, ns.output_len)["decode_tok_s"])
        tok_s = statistics.median(rates)
    else:
        t0 = time.perf_counter()
        outs = engine.generate(input_ids=prompts[:ns.batch], sampling_params=params)
        tok_s = sum(len(o["output_ids"]) for o in outs) / (time.perf_counter() - t0)
    after = engine.get_server_info()
    drafted = after.get("spec_num_draft_tokens", 0) - before.get("spec_num_draft_tokens", 0)
    accepted = after.get("spec_num_accepted_tokens", 0) - before.get("spec_num_accepted_tokens", 0)
    steps = after.get("spec_num_verify_steps", 0) - before.get("spec_num_verify_steps", 0)
    forwards = after["num_forward_steps"] - before["num_forward_steps"]
    prefills = len(prompts) if ns.batch == 1 else 1
    decoded = (len(prompts) if ns.batch == 1 else ns.batch) * (ns.output_len - 1)
    # Tokens per target decode pass: the speed-up speculation can buy when a target pass costs the same
    # with K+1 tokens as with 1 (bandwidth-bound GPUs), independent of how busy a shared CPU is.
    per_pass = decoded / max(forwards - prefills, 1)
    return {"tok_s": round(tok_s, 1), "accept_rate": round(accepted / drafted, 3) if drafted else None,
            "draft_tokens": drafted, "verify_steps": steps, "tokens_per_target_pass": round(per_pass, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="models/demo")
    parser.add_argument("--draft", default="models/demo-draft")
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", default="base,draft,ngram,wrong,wrong-raw")
    parser.add_argument("--workloads", default="text,repetitive")
    parser.add_argument("--k", type=int, default=4, help="--speculative-num-draft-tokens")
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--input-len", type=int, default=256, help="random / repetitive workloads")
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--wrong-token", type=int, default=7, help="the fixed token of mode `wrong`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine-args", default="{}", help="JSON of extra ServerArgs fields")
    ns = parser.parse_args()

    from engine.model_config import load_hf_config

    vocab = load_hf_config(ns.model_path).vocab_size
    workloads = ns.workloads.split(",")
    rows = []
    for mode in ns.modes.split(","):
        rows += run_mode(mode, ns, vocab, workloads)
        print(json.dumps(rows[-len(workloads):]), flush=True)
    base = {r["workload"]: r["tok_s"] for r in rows if r["mode"] == "base"}
    print("\n| mode | workload | tok/s | vs base | accept rate | drafts | verify passes | tokens / target pass |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['tok_s'] / base[r['workload']]:.2f}x" if base.get(r["workload"]) else "-"
        rate = "-" if r["accept_rate"] is None else f"{r['accept_rate']:.1%}"
        print(f"| {r['mode']} | {r['workload']} | {r['tok_s']} | {ratio} | {rate} | {r['draft_tokens']} | "
              f"{r['verify_steps']} | {r['tokens_per_target_pass']} |")


if __name__ == "__main__":
    main()
