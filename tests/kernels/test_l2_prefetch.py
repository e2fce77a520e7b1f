"""`kernels.l2_prefetch`: which bytes it plans to prefetch and its budget (CPU), the kernel's NVRTC builds (CPU:
NVRTC needs no GPU), and on the GPU that the prefetch leaves memory as it was, inside a CUDA graph as a parallel
branch, for ranges that do not fill a whole chunk."""

from __future__ import annotations

import pytest
import torch

from kernels import cuda_rtc, l2_prefetch
from kernels.cuda_rtc import compile_cubin


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def test_plan_takes_tensors_in_order_until_the_budget_and_cuts_the_last() -> None:
    o, gate_up, down = torch.empty(1000, dtype=torch.int8), torch.empty(4000, dtype=torch.int8), torch.empty(64)
    ranges = l2_prefetch.plan([o, gate_up, down], 2500)
    assert [(t is o, t is gate_up, n) for t, n in ranges] == [(True, False, 992), (False, True, 1504)]
    # 1000 bytes round down to the 16-byte granule; the budget left after o (1508) too
    assert l2_prefetch.plan([o, gate_up], 0) == () and l2_prefetch.plan([o], 15) == ()
    whole = l2_prefetch.plan([down, o], 10**9)
    assert [n for _, n in whole] == [256, 992]


def test_plan_stops_at_the_kernels_range_count() -> None:
    tensors = [torch.empty(64, dtype=torch.int8) for _ in range(5)]
    ranges = l2_prefetch.plan(tensors, 10**6)
    assert len(ranges) == l2_prefetch.MAX_RANGES and [t for t, _ in ranges] == tensors[:l2_prefetch.MAX_RANGES]


def test_budget_off_on_cpu_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_L2_PREFETCH_MB", "24")
    assert l2_prefetch.budget_bytes(torch.device("cpu")) == 0  # CPU tensors never prefetch
    assert l2_prefetch.budget_bytes(torch.device("cuda", 0)) == 24 * 2**20  # the env var beats the table
    monkeypatch.setattr(l2_prefetch, "BUDGET_OVERRIDE_MB", 0.5)
    assert l2_prefetch.budget_bytes(torch.device("cuda", 0)) == 2**19  # the bench's override beats both


def test_budget_table_is_per_device_and_weight_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESSERA_L2_PREFETCH_MB", raising=False)
    monkeypatch.setattr(l2_prefetch, "BUDGET_MB", {"H100": {"awq": 32.0}})
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cuda = torch.device("cuda", 0)
    assert l2_prefetch.budget_bytes(cuda, "awq") == 32 * 2**20
    assert l2_prefetch.budget_bytes(cuda, "fp8") == 0 and l2_prefetch.budget_bytes(cuda) == 0  # not listed: off
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert l2_prefetch.budget_bytes(cuda, "awq") == 0  # another device


def test_kernel_builds_for_hopper_and_ampere() -> None:
    """sm_90 issues TMA bulk prefetches, sm_80 per-line prefetches: both must compile."""
    source = cuda_rtc.read_source("l2_prefetch.cu")
    for arch in ("sm_90", "sm_80"):
        cubin, lowered = compile_cubin(source, "l2_prefetch", arch)
        assert cubin[:4] == b"\x7fELF" and "l2_prefetch" in lowered, arch


@pytest.mark.gpu
def test_prefetch_in_a_graph_branch_changes_nothing_gpu(tmp_path) -> None:
    """Ranges of odd sizes (a partial last chunk, a tensor smaller than one chunk) beside other work, captured in
    a CUDA graph: the graph holds the prefetch kernel as its own node, the work's result is the eager one, and the
    prefetched tensors are unchanged. The work is elementwise, so eager and replayed results compare bit for bit
    (a GEMM may pick another algorithm under capture and round differently)."""
    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    a = torch.randn(3 * l2_prefetch.CHUNK // 2 + 48, dtype=torch.float16, device=dev)  # 1.5 chunks + 96 B
    b = torch.randint(0, 255, (1000,), dtype=torch.uint8, device=dev)
    x, w = torch.randn(8, 256, device=dev), torch.randn(8, 256, device=dev)
    a0, b0, expected = a.clone(), b.clone(), x * w
    ranges = l2_prefetch.plan([a, b], 10**9)
    assert [n for _, n in ranges] == [_nbytes(a), 992]
    out = torch.empty_like(expected)
    with l2_prefetch.beside(ranges):  # eager, once: compiles and loads the kernel outside the capture
        torch.mul(x, w, out=out)
    graph = torch.cuda.CUDAGraph(keep_graph=True)  # the captured cudaGraph_t stays, for debug_dump to print
    graph.enable_debug_mode()
    out.zero_()
    with torch.cuda.graph(graph):
        with l2_prefetch.beside(ranges):
            torch.mul(x, w, out=out)
    graph.instantiate()
    graph.replay()
    torch.cuda.synchronize()
    dump = tmp_path / "graph.dot"
    graph.debug_dump(str(dump))
    assert "l2_prefetch" in dump.read_text()
    assert torch.equal(out, expected)
    assert torch.equal(a, a0) and torch.equal(b, b0)
