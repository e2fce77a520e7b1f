"""Long context, one request at a time: TTFT and decode tok/s at 8k / 32k / 100k input tokens, next
to the decode roofline at that context (weights + KV read per step) and the prefill rate in TFLOP/s.

    python bench/long_context.py                                   # default backend (hybrid with flashinfer)
    python bench/long_context.py --engine-args '{"attention_backend": "triton"}'

Each length runs once after a warm-up that runs the same kernels (`warmup_len`; the radix cache is flushed
before every measured prompt, so the whole prompt is prefilled). Decode tok/s counts the tokens after the first over the time after the first; the
roofline uses the mean KV length of the decode (input + output / 2) and the copy bandwidth measured in
the same run. Prefill FLOPs: 2 x non-embedding params per token for the linears, plus causal
attention 2 x layers x n^2 x (q heads x head_dim) (QK^T and PV over half the n x n square each).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.single_stream import measure_stream  # noqa: E402
from bench.workloads import random_prompt  # noqa: E402

DEFAULT_LENS = (8192, 32768, 100_000)


def prefill_flops(model_dir: str, n: int) -> float:
    from transformers import AutoConfig

    from bench.roofline import model_shape

    c = AutoConfig.from_pretrained(model_dir)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    shape = model_shape(model_dir)
    linear = 2 * (shape.num_params - shape.embed_params) * n
    attention = 2 * c.num_hidden_layers * n * n * c.num_attention_heads * head_dim
    return float(linear + attention)


def decode_roofline_tok_s(model_dir: str, context_len: int, copy_tbs: float) -> float:
    from bench.roofline import model_shape

    shape = model_shape(model_dir)
    return copy_tbs * 1e12 / (shape.bytes_per_decode_step + context_len * shape.kv_bytes_per_token)


def warmup_len(input_lens, chunk: int) -> int:
    """A warm-up prompt that runs what the measured prompts run: two full chunks (the second one over a
    cached prefix, the dense prefill path) and a partial one, capped at the longest measured prompt. A
    256-token warm-up left the first long prompt paying one-time costs inside its TTFT: loading the ragged
    prefill kernel's module, the allocator's first large activation blocks, cuBLAS's first 8k-row GEMMs."""
    if chunk <= 0:  # chunking off: one whole-prompt step
        return max(input_lens)
    return min(max(input_lens), 2 * chunk + 512)


def run_long_context(engine, model_dir: str, vocab: int, copy_tbs: float | None, input_lens=DEFAULT_LENS,
                     output_len: int = 128, seed: int = 0, chunk: int = 8192) -> list[dict]:
    rng = random.Random(seed)
    measure_stream(engine, random_prompt(rng, 256, vocab), 8)  # warm-up: decode graphs, short prefill
    measure_stream(engine, random_prompt(rng, warmup_len(input_lens, chunk), vocab), 8)  # warm-up: long prefill
    rows = []
    for n in input_lens:
        engine.flush_cache()
        r = measure_stream(engine, random_prompt(rng, n, vocab), output_len)
        row = {"input_len": n, "output_len": output_len, "ttft_ms": round(r["ttft_ms"], 1),
               "prefill_tflops": round(prefill_flops(model_dir, n) / (r["ttft_ms"] * 1e-3) / 1e12, 1),
               "decode_tok_s": round(r["decode_tok_s"], 1)}
        if copy_tbs:
            roof = decode_roofline_tok_s(model_dir, n + output_len // 2, copy_tbs)
            row["decode_roofline_tok_s"] = round(roof, 1)
            row["decode_pct_roofline"] = round(100 * r["decode_tok_s"] / roof, 1)
        rows.append(row)
        print("long context:", json.dumps(row), flush=True)
    return rows


def format_rows(rows: list[dict]) -> list[tuple[str, object, str, str]]:
    """(metric, measured, target, reference) rows for run_suite's table."""
    out = []
    for r in rows:
        k = f"{r['input_len']:,} in"
        out.append((f"long context {k}: TTFT (ms)", r["ttft_ms"], "<= 6500 @100k" if r["input_len"] >= 100_000 else "",
                    f"{r['prefill_tflops']} TFLOP/s"))
        roof = (f"roofline {r['decode_roofline_tok_s']} ({r['decode_pct_roofline']}%)"
                if "decode_roofline_tok_s" in r else "")
        out.append((f"long context {k}: decode tok/s", r["decode_tok_s"],
                    ">= 90% roofline" if r["input_len"] >= 100_000 else "", roof))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default="bench/models/llama-3.1-8b")
    parser.add_argument("--input-lens", type=int, nargs="+", default=list(DEFAULT_LENS))
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--engine-args", default="{}", help="JSON of extra ServerArgs fields")
    ns = parser.parse_args()

    import torch

    from bench.roofline import copy_bandwidth_tbs
    from engine import Engine
    from engine.model_config import load_hf_config

    copy_tbs = None
    if torch.cuda.is_available():
        copy_tbs = copy_bandwidth_tbs()
        torch.cuda.empty_cache()  # hand the copy buffers back before the engine sizes its KV cache
    vocab = load_hf_config(ns.model_path).vocab_size
    extra = json.loads(ns.engine_args)
    extra.setdefault("context_length", max(ns.input_lens) + ns.output_len + 8)
    with Engine(model_path=ns.model_path, load_format="dummy", skip_tokenizer_init=True, **extra) as engine:
        backend = engine.get_server_info().get("attention_backend")
        print("attention backend:", backend, "copy bandwidth TB/s:", copy_tbs, flush=True)
        chunk = engine.get_server_info()["chunked_prefill_size"]  # the engine's own default unless given
        rows = run_long_context(engine, ns.model_path, vocab, copy_tbs, ns.input_lens, ns.output_len, chunk=chunk)
    for name, value, target, ref in format_rows(rows):
        print(f"{name:40s} | {value!s:>10} | {target:>16} | {ref}")
    print(json.dumps({"attention_backend": backend, "long_context": rows}))


if __name__ == "__main__":
    main()
