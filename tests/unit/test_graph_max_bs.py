"""--cuda-graph-max-bs: its default follows the GPU's memory; an explicit value stands."""

from __future__ import annotations

import pytest

from engine.args import ArgsError, ServerArgs
from engine.cuda_graph_runner import capture_batch_sizes, default_graph_max_bs

GiB = 1024**3


@pytest.mark.parametrize(("total_bytes", "expected"), [
    (141 * 10**9, 512),  # H200: ~250-300 requests decode at 32 req/s (bench/RESULTS.md, 2026-12-03)
    (80 * GiB, 512),  # H100 80 GB
    (70 * GiB, 512),
    (48 * GiB, 256),  # 512-row graphs (~5 GiB with the hybrid backend) would eat a tenth of this card
    (24 * GiB, 256),
    (0, 256),  # CPU: no graphs, the value only sizes nothing
])
def test_default_follows_gpu_memory(total_bytes: int, expected: int) -> None:
    assert default_graph_max_bs(total_bytes) == expected


def test_capture_sizes_reach_the_default_max() -> None:
    sizes = capture_batch_sizes(default_graph_max_bs(141 * 10**9))
    assert sizes[-1] == 512 and 304 in sizes  # the 257-304-row steps that ran eagerly before


def test_flag_defaults_to_auto_and_explicit_values_are_checked(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a model directory, as far as the flags' checks look
    model = str(tmp_path)
    assert ServerArgs(model_path=model).cuda_graph_max_bs is None
    assert ServerArgs(model_path=model, cuda_graph_max_bs=64).cuda_graph_max_bs == 64
    with pytest.raises(ArgsError, match="--cuda-graph-max-bs must be >= 1"):
        ServerArgs(model_path=model, cuda_graph_max_bs=0)
