"""Teacher-forced accuracy of a quantized model's GPU kernels (shared by test_gpu_fp8.py / test_gpu_awq.py).

Free-running greedy agreement is no measure on the tests' random tiny models: their logits are nearly
flat, so one rounding difference flips a token and everything after it differs (W8A8 emulated exactly
in torch agrees with the dequantized model on 13 % of greedy prefixes, while its logits are within
13 % RMS). Teacher forcing feeds every runner the reference's greedy tokens, so each step compares logits
of the same context (`bench.kv_accuracy.measure`): relative RMS logit error, mean KL, top-1 agreement.
"""

from __future__ import annotations

import random

import torch

from bench.kv_accuracy import KVAccuracy, build_runner, measure

CUDA = torch.device("cuda", 0)


def random_prompts(count: int, seed: int, vocab: int = 384) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, vocab) for _ in range(rng.randrange(5, 300))] for _ in range(count)]


def teacher_forced(reference: tuple[str, torch.device], candidate: tuple[str, torch.device], dtype: str,
                   prompts: list[list[int]], steps: int, **server_args) -> KVAccuracy:
    """`candidate` (model dir, device; CUDA graphs on CUDA) against `reference` (model dir, device; eager),
    both in `dtype` and built with `server_args`, the candidate fed the reference's greedy tokens."""
    tokens = sum(len(p) + steps for p in prompts) + 64
    runners = {}
    for name, (path, device) in (("reference", reference), ("candidate", candidate)):
        runners[name] = build_runner(path, "auto", device, dtype=dtype, max_total_tokens=max(tokens, 4096),
                                     max_running_requests=max(len(prompts), 1),
                                     disable_cuda_graph=name == "reference" or device.type != "cuda",
                                     attention_backend="triton" if device.type == "cuda" else None,
                                     **server_args)
    (result,) = measure(runners, prompts, steps)
    runners.clear()
    torch.cuda.empty_cache()
    return result
