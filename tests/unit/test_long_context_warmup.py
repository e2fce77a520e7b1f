"""bench/long_context.py's warm-up prompt covers the measured prompts' kernels: two full chunks (the second
over a cached prefix: the dense prefill path) plus a partial one, never longer than the longest measurement."""

from __future__ import annotations

from bench.long_context import warmup_len


def test_warmup_runs_two_full_chunks_and_a_partial_one() -> None:
    assert warmup_len([8192, 32768, 100_000], 8192) == 2 * 8192 + 512
    assert warmup_len([100_000], 32768) == 2 * 32768 + 512


def test_warmup_never_exceeds_the_longest_measured_prompt() -> None:
    assert warmup_len([4096], 8192) == 4096
    assert warmup_len([100_000], -1) == 100_000  # chunking off: the whole prompt is one step
