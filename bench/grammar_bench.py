"""Structured generation benchmark: what a JSON schema costs and what jump-forward saves.

1. Compile time of 20 real-world schemas (bench/schemas/real_world.json) against the model's
   vocabulary, cold (no cache): p50 / p99 / max.
2. Batch throughput (`--reps` alternating runs, median): `--batch` requests decoding `--output-len`
   tokens each, unconstrained vs under
   a JSON schema whose shortest document is longer than the output (an array of at least 10,000
   objects), so both runs decode exactly the same number of tokens and the difference is the
   grammar's cost (mask fill on the CPU, mask applied on the device, no overlap chaining).
3. Jump-forward: requests under a schema with long fixed keys, `--enable-jump-forward` off vs on:
   forward steps, wall time, output tokens.

    .venv/bin/python bench/grammar_bench.py                      # CPU, demo model
    python bench/grammar_bench.py --model-path bench/models/llama-3.1-8b --load-format dummy   # GPU

A config-only model dir gets a synthetic byte-level BPE tokenizer of the config's vocabulary size
(bench/synthetic_tokenizer.py); `--tokenizer-path` takes a real one instead (bench/tekken_tokenizer.py
builds Mistral's 131 K Tekken vocabulary), and the model config takes its vocabulary size. Prints one JSON line and a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

ROW = {"type": "object", "properties": {
    "sentiment": {"enum": ["positive", "neutral", "negative"]}, "score": {"type": "integer", "minimum": 0,
                                                                          "maximum": 100},
    "note": {"type": "string", "maxLength": 24}, "flag": {"type": "boolean"}},
    "required": ["sentiment", "score", "note", "flag"], "additionalProperties": False}
ENDLESS = {"type": "array", "items": ROW, "minItems": 10000}
FIXED_KEYS = {"type": "object", "properties": {
    "customer_account_identifier_number": {"type": "integer", "minimum": 0, "maximum": 9},
    "subscription_is_currently_active": {"type": "boolean"},
    "preferred_contact_channel_for_notifications": {"enum": ["email", "phone", "sms"]},
    "account_region_code_iso_3166": {"enum": ["DE", "FR", "US"]},
    "marketing_consent_was_given_explicitly": {"type": "boolean"}},
    "required": ["customer_account_identifier_number", "subscription_is_currently_active",
                 "preferred_contact_channel_for_notifications", "account_region_code_iso_3166",
                 "marketing_consent_was_given_explicitly"], "additionalProperties": False}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_compile(tokenizer_path: str, model_path: str) -> dict:
    from transformers import AutoTokenizer

    from engine.grammar.backend import XGrammarBackend
    from engine.model_config import load_hf_config

    cfg = load_hf_config(model_path)
    eos = cfg.eos_token_id if isinstance(cfg.eos_token_id, list) else [cfg.eos_token_id]
    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    t0 = time.perf_counter()
    backend = XGrammarBackend(tok, cfg.vocab_size, eos)
    setup = time.perf_counter() - t0
    schemas = json.load(open(os.path.join(ROOT, "bench", "schemas", "real_world.json")))
    times = []
    for spec in schemas.values():
        t = time.perf_counter()
        backend.compile("json_schema", json.dumps(spec))
        times.append(time.perf_counter() - t)
    return {"tokenizer_info_s": round(setup, 3), "schemas": len(times),
            "compile_p50_ms": round(1000 * statistics.median(times), 1),
            "compile_p99_ms": round(1000 * percentile(times, 0.99), 1),
            "compile_max_ms": round(1000 * max(times), 1)}


def run_batch(engine, prompts, params) -> tuple[float, int, dict]:
    before = engine.get_server_info()
    t0 = time.perf_counter()
    outs = engine.generate(input_ids=prompts, sampling_params=params)
    elapsed = time.perf_counter() - t0
    after = engine.get_server_info()
    steps = after["num_forward_steps"] - before["num_forward_steps"]
    host = {k: round(after.get(k, 0) - before.get(k, 0), 4)
            for k in ("num_overlapped_steps", "grammar_mask_fill_s", "grammar_accept_s")}
    return elapsed, sum(len(o["output_ids"]) for o in outs), {"steps": steps, "outs": outs, **host}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=os.path.join(ROOT, "models", "demo"))
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--tokenizer-path", default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=None)
    parser.add_argument("--jump-requests", type=int, default=None)
    parser.add_argument("--reps", type=int, default=3, help="alternating throughput repetitions (median)")
    parser.add_argument("--engine-args", default="{}", help="JSON of extra ServerArgs fields")
    ns = parser.parse_args(argv)

    import torch
    from synthetic_tokenizer import tokenizer_for

    from engine import Engine

    on_gpu = torch.cuda.is_available()
    out_len = ns.output_len or (256 if on_gpu else 48)
    jump_n = ns.jump_requests or (64 if on_gpu else 8)
    tok_path = ns.tokenizer_path or tokenizer_for(ns.model_path, os.path.join(tempfile.gettempdir(), "tessera-tok"))
    tok_path = tok_path or ns.model_path
    if ns.tokenizer_path:  # e.g. the real 131 K vocabulary of bench/tekken_tokenizer.py
        from tekken_tokenizer import model_dir_for

        ns.model_path = model_dir_for(ns.model_path, tok_path, os.path.join(tempfile.gettempdir(), "tessera-tok"))
    result: dict = {"device": torch.cuda.get_device_name() if on_gpu else "cpu", "model": ns.model_path,
                    "batch": ns.batch, "output_len": out_len}
    result["compile"] = bench_compile(tok_path, ns.model_path)

    kwargs = {"model_path": ns.model_path, "load_format": ns.load_format, "tokenizer_path": tok_path,
              **json.loads(ns.engine_args)}
    rng = random.Random(0)
    prompts = [[rng.randrange(100, 3000) for _ in range(rng.randint(16, 64))] for _ in range(ns.batch)]
    plain = {"max_new_tokens": out_len, "temperature": 0.7, "ignore_eos": True}
    constrained = {**plain, "json_schema": json.dumps(ENDLESS)}
    fixed = {"max_new_tokens": 400, "temperature": 0.7, "json_schema": json.dumps(FIXED_KEYS)}
    jump_prompts = prompts[:jump_n]
    with Engine(**kwargs) as engine:
        warm = {**plain, "max_new_tokens": 8}
        engine.generate(input_ids=prompts, sampling_params=[warm, {**warm, "json_schema": json.dumps(ENDLESS)}]
                        * (ns.batch // 2))  # graphs, compiles and caches warm
        # Alternating repetitions, median of each: a busy machine's noise hits both sides alike.
        plain_runs, con_runs = [], []
        for _ in range(ns.reps):
            plain_runs.append(run_batch(engine, prompts, plain)[:2])
            con = run_batch(engine, prompts, constrained)
            con_runs.append(con[:2])
            host = {k: v for k, v in con[2].items() if k != "outs"}
            print(f"constrained run: {con[0]:.3f} s, host {host}", flush=True)
        t_plain, n_plain = statistics.median(t for t, _ in plain_runs), plain_runs[0][1]
        t_con, n_con = statistics.median(t for t, _ in con_runs), con_runs[0][1]
        engine.generate(input_ids=jump_prompts[:2], sampling_params=fixed)
        t_nojump, n_nojump, r_nojump = run_batch(engine, jump_prompts, fixed)
    with Engine(**kwargs, enable_jump_forward=True) as engine:
        engine.generate(input_ids=jump_prompts[:2], sampling_params=fixed)
        t_jump, n_jump, r_jump = run_batch(engine, jump_prompts, fixed)
        info = engine.get_server_info()
    for r in (r_nojump, r_jump):
        for out in r["outs"]:
            json.loads(out["text"])  # valid either way (or the benchmark is meaningless)
    result["throughput"] = {
        "unconstrained_tok_s": round(n_plain / t_plain, 1), "json_schema_tok_s": round(n_con / t_con, 1),
        "tokens": [n_plain, n_con], "reps": ns.reps,
        "walls_s": [[round(t, 3) for t, _ in plain_runs], [round(t, 3) for t, _ in con_runs]], "loss_pct": round(100 * (1 - (n_con / t_con) / (n_plain / t_plain)), 2)}
    result["jump_forward"] = {
        "requests": jump_n, "steps_off": r_nojump["steps"], "steps_on": r_jump["steps"],
        "wall_off_s": round(t_nojump, 3), "wall_on_s": round(t_jump, 3), "tokens_off": n_nojump, "tokens_on": n_jump,
        "jumped_tokens": info["jump_forward_tokens"],
        "wall_saved_pct": round(100 * (1 - t_jump / t_nojump), 1)}
    print(json.dumps(result))
    c, tp, jf = result["compile"], result["throughput"], result["jump_forward"]
    print(f"\n{'grammar bench':<34}{result['device']}, {os.path.basename(ns.model_path.rstrip('/'))}")
    print(f"{'compile p50 / p99 / max (20 schemas)':<34}{c['compile_p50_ms']} / {c['compile_p99_ms']} / "
          f"{c['compile_max_ms']} ms (tokenizer info {c['tokenizer_info_s']} s)")
    print(f"{'batch ' + str(ns.batch) + ' output tok/s':<34}unconstrained {tp['unconstrained_tok_s']}, "
          f"json_schema {tp['json_schema_tok_s']} (loss {tp['loss_pct']} %)")
    print(f"{'jump-forward steps off -> on':<34}{jf['steps_off']} -> {jf['steps_on']} ({jump_n} requests)")
    print(f"{'jump-forward wall off -> on':<34}{jf['wall_off_s']} s -> {jf['wall_on_s']} s "
          f"({jf['wall_saved_pct']} % saved; tokens {jf['tokens_off']} -> {jf['tokens_on']})")
    return result


if __name__ == "__main__":
    main()
