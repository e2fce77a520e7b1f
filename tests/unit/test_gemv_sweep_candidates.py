"""The GEMV tile sweep's candidate lists (bench/gemv_sweep.py) stay within the device-time budget and
only hold tiles the launcher accepts."""

from __future__ import annotations

import pytest

from bench.gemv_sweep import MAX_CONFIGS, SMALL_N, sweep_candidates
from kernels.gemv_configs import default_config, validate

LLAMA_8B = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)]


@pytest.mark.parametrize(("n", "k"), LLAMA_8B)
def test_candidates_fit_the_budget_and_start_with_the_default(n: int, k: int) -> None:
    cands = sweep_candidates(n, k)
    assert cands[0] == default_config(k)
    assert len(cands) == len(set(cands)) <= MAX_CONFIGS
    for cfg in cands:
        validate(cfg)
        assert cfg.block_k * cfg.split_k <= k, f"{cfg}: a slice shorter than one K-chunk"
    splits = {cfg.split_k for cfg in cands}
    if n <= SMALL_N:
        assert splits >= {1, 2, 4}, "the small projections get split-K candidates"
    else:
        assert max(splits) <= 2, "many row blocks already fill the GPU: at most a token split-K"
