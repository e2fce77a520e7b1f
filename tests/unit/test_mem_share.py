"""--gpu-memory-utilization-limit (alias of --mem-fraction-static): the fraction of the device this instance
may take, so two instances at 0.5 share one GPU. Also the other scale-out flag aliases."""

from __future__ import annotations

import argparse

import pytest

from engine.args_cli import add_cli_args, args_from_namespace
from engine.model_runner import GPU_RESERVE_BYTES, kv_budget_bytes

GiB = 1 << 30


def _parse(*flags: str):
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    return args_from_namespace(parser.parse_args(["--device", "cpu", *flags]))


def test_aliases():
    args = _parse("--gpu-memory-utilization-limit", "0.5", "--load-balance-method", "min_load", "--dp-size", "2")
    assert args.mem_fraction_static == 0.5 and args.normalized_lb_policy == "min-load" and args.dp_size == 2


def test_two_instances_at_half_both_fit():
    total, weights = 80 * GiB, 16 * GiB
    # First instance on an empty GPU: 0.5 x 80 = 40 GiB for itself, 16 of them weights.
    first = kv_budget_bytes(total, free_before=total, free_after=total - weights, fraction=0.5)
    assert first == pytest.approx(24 * GiB)
    used_by_first = weights + first
    # Second instance: the first one's 40 GiB do not count against its own share.
    free_before = total - used_by_first
    second = kv_budget_bytes(total, free_before, free_before - weights, fraction=0.5)
    assert second == pytest.approx(24 * GiB - GPU_RESERVE_BYTES)  # capped by what is really free
    assert second > 0
    # A share larger than what is free is capped, never over-committed.
    assert kv_budget_bytes(total, free_before, free_before - weights, fraction=0.9) <= free_before - weights
