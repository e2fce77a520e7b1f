"""DESIGN.md's benchmark workloads as token-id prompts (no tokenizer needed), and summary statistics."""

from __future__ import annotations

import random
import statistics


def random_prompt(rng: random.Random, length: int, vocab: int) -> list[int]:
    # Low ids are often special tokens in real vocabularies; stay clear of them.
    return [rng.randrange(100, vocab - 1) for _ in range(length)]


def offline_prompts(num: int, min_in: int, max_in: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Inputs uniform in [min_in, max_in] (the same draw as bench/offline.py's make_workload)."""
    from bench.offline import make_workload

    return make_workload(num, min_in, max_in, vocab, seed)


def shared_prefix_prompts(num_groups: int, per_group: int, prefix_len: int, question_len: int, vocab: int,
                          seed: int = 0) -> list[list[int]]:
    """num_groups system prompts, each followed by per_group different questions; grouped order."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(num_groups):
        prefix = random_prompt(rng, prefix_len, vocab)
        prompts += [prefix + random_prompt(rng, question_len, vocab) for _ in range(per_group)]
    return prompts


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize_ms(values_s: list[float]) -> dict[str, float]:
    """median / p99 / mean of a list of seconds, in milliseconds."""
    ms = [v * 1e3 for v in values_s]
    return {"median_ms": round(percentile(ms, 50), 2), "p99_ms": round(percentile(ms, 99), 2),
            "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan")}
