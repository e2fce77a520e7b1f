"""HF transformers baseline on the offline workload: what a user would run without Tessera.

    python bench/hf_baseline.py --model bench/models/llama-3.1-8b --num-prompts 64

Random bf16 weights of the same shape, on the GPU. Uses transformers' continuous batching
(`model.generate_batch`) when this transformers has it, else static-batch `generate` over
left-padded prompts. Runs a subset of the 256-request workload (its first `--num-prompts`,
the same draw as bench/offline.py) to bound the time; prints one JSON line.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.workloads import offline_prompts  # noqa: E402


def _load(model_dir: str):
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(model_dir)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.eval()
    # ignore_eos: random weights would otherwise stop at random points.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def run_generate_batch(model, prompts: list[list[int]], output_len: int) -> tuple[int, float, str]:
    from transformers import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=output_len, do_sample=False, eos_token_id=None, pad_token_id=0)
    kwargs = {"generation_config": cfg}
    if "progress_bar" in inspect.signature(model.generate_batch).parameters:
        kwargs["progress_bar"] = False
    model.generate_batch(inputs=prompts[:2], **{**kwargs, "generation_config": GenerationConfig(
        max_new_tokens=4, do_sample=False, eos_token_id=None, pad_token_id=0)})  # warm-up
    t0 = time.perf_counter()
    results = model.generate_batch(inputs=prompts, **kwargs)
    elapsed = time.perf_counter() - t0
    errors = [r.error for r in results.values() if getattr(r, "error", None)]
    if errors or len(results) != len(prompts):
        raise RuntimeError(f"{len(errors)} of {len(prompts)} requests failed: {errors[:1]}")
    tokens = sum(len(r.generated_tokens) for r in results.values())
    return tokens, elapsed, "generate_batch (continuous batching)"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_static(model, prompts: list[list[int]], output_len: int, batch: int) -> tuple[int, float, str]:
    import torch

    tokens, elapsed = 0, 0.0
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in chunk], device=model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=model.device)
        _sync()
        t0 = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=output_len,
                             min_new_tokens=output_len, do_sample=False)
        _sync()
        elapsed += time.perf_counter() - t0
        tokens += (out.shape[1] - width) * len(chunk)
    return tokens, elapsed, f"static-batch generate (batch {batch})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--min-input", type=int, default=256)
    parser.add_argument("--max-input", type=int, default=1024)
    parser.add_argument("--mode", choices=["auto", "generate_batch", "static"], default="auto")
    ns = parser.parse_args()

    import torch
    import transformers

    vocab = transformers.AutoConfig.from_pretrained(ns.model).vocab_size
    parser_sizes = (ns.min_input, ns.max_input)
    prompts = offline_prompts(256, *parser_sizes, vocab)[: ns.num_prompts]
    model = _load(ns.model)
    result = {"transformers": transformers.__version__, "num_prompts": len(prompts)}
    # no_grad, not inference_mode: generate_batch works in a background thread, where tensors made
    # under inference_mode cannot be updated in place.
    with torch.no_grad():
        mode = ns.mode
        if mode == "auto":
            mode = "generate_batch" if hasattr(model, "generate_batch") else "static"
        try:
            if mode == "generate_batch":
                tokens, elapsed, how = run_generate_batch(model, prompts, ns.output_len)
            else:
                tokens, elapsed, how = run_static(model, prompts, ns.output_len, 64)
        except Exception as exc:  # fall back once: the baseline must produce a number
            result["generate_batch_error"] = f"{type(exc).__name__}: {exc}"[:300]
            tokens, elapsed, how = run_static(model, prompts, ns.output_len, 64)
    result.update(method=how, output_tokens=tokens, elapsed_s=round(elapsed, 2),
                  output_tok_s=round(tokens / elapsed, 1))
    print("HF_BASELINE " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
