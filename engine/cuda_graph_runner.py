"""CudaGraphRunner: decode forward passes captured as CUDA graphs, one per batch size in a list.

A decode step of an 8B model is ~450 kernel launches; replaying a graph turns them into one launch,
so small batches run at the GPU's pace instead of Python's. A batch of size B replays the graph of
the smallest captured size >= B, which reads that size's input block (`engine.graph_inputs`): the batch
builder writes a decode batch straight into it (`graph_inputs`), anything else is copied in at replay. Padded
rows get `seq_len 0` and write their K/V to slot 0, the pool's scratch slot (the triton kernel skips empty
rows; FlashInfer gives each padded row one page, slot 0).

The attention backend sees the static batch through two hooks: `init_forward_metadata_capture`
before a size is warmed up and captured, `init_forward_metadata_replay` (with the real rows' host
lengths) before each replay. `triton` needs nothing per replay (its split count depends on the batch
size alone); `flashinfer` re-plans that size's cuda-graph decode wrapper there. `torch_native` reads
host lengths inside its forward and is never captured. Captures share one memory pool, largest batch
first; runners that share a pool may share their input blocks too (`inputs`), so the block a batch was built
into serves whichever of them replays it.
"""

from __future__ import annotations

import bisect
import logging
import time

import torch

from engine.forward_batch import ForwardBatch, ForwardMode
from engine.graph_inputs import DecodeInputBlock

logger = logging.getLogger(__name__)


# --cuda-graph-max-bs when not given: batches above the largest graph run eagerly, ~2.5x slower per step
# (H200, 8B shape: 35.5 ms at 257-304 rows vs 14.3 ms for graphed 200-256), and at 32 req/s an H200 keeps
# ~250-300 requests decoding. 512-row graphs cost 5.1 GiB (hybrid: two graph sets) vs 1.7 GiB for 256,
# so only GPUs with room for that get them.
LARGE_GPU_BYTES = 70 * 1024**3
LARGE_GPU_GRAPH_MAX_BS = 512
GRAPH_MAX_BS = 256


def default_graph_max_bs(total_gpu_bytes: int) -> int:
    """The largest captured decode batch when --cuda-graph-max-bs is not set."""
    return LARGE_GPU_GRAPH_MAX_BS if total_gpu_bytes >= LARGE_GPU_BYTES else GRAPH_MAX_BS


def capture_batch_sizes(max_bs: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to 64, then every 16: padding wastes at most ~12% of a batch."""
    sizes = [1, 2, 4, 8, *range(16, 65, 8), *range(80, max(max_bs, 1) + 16, 16)]
    return sorted({s for s in sizes if s <= max_bs} | {max_bs})


class CudaGraphRunner:
    def __init__(self, model: torch.nn.Module, attn_backend, req_to_token: torch.Tensor, max_bs: int,
                 device: torch.device, use_graphs: bool = True, graph_pool=None,
                 inputs: dict[int, DecodeInputBlock] | None = None) -> None:
        """`use_graphs=False` runs the same padded static-buffer path eagerly (tests it on the CPU).
        `graph_pool`, `inputs`: another runner's `graph_pool` and `inputs`, to share its memory and input blocks
        (runners that never replay at the same time, like the hybrid backend's two decode graph sets)."""
        self.model = model
        self.attn_backend = attn_backend
        self.req_to_token = req_to_token
        self.device = device
        self.use_graphs = use_graphs
        self.batch_sizes = capture_batch_sizes(max_bs)
        self.max_bs = self.batch_sizes[-1]
        self.inputs = inputs if inputs is not None else {bs: DecodeInputBlock(bs, device) for bs in self.batch_sizes}
        # One static batch per size, kept: a backend may hold on to the batch it captured with.
        self.static_batches = {bs: self._static_batch(bs) for bs in self.batch_sizes}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.capture_seconds = 0.0
        self.graph_pool = graph_pool
        if use_graphs:
            self._capture_all()
        else:
            for bs in reversed(self.batch_sizes):
                self.attn_backend.init_forward_metadata_capture(self.static_batches[bs])

    def _static_batch(self, bs: int) -> ForwardBatch:
        block = self.inputs[bs]
        return ForwardBatch(
            forward_mode=ForwardMode.DECODE, batch_size=bs, input_ids=block.input_ids,
            positions=block.positions, req_pool_indices=block.req_pool_indices, seq_lens=block.seq_lens,
            out_cache_loc=block.out_cache_loc, req_to_token=self.req_to_token, prefix_lens=block.seq_lens,
            extend_lens=block.ones, extend_start_loc=block.arange,
            seq_lens_cpu=[0] * bs, prefix_lens_cpu=[0] * bs, extend_lens_cpu=[1] * bs,
            logits_indices=block.arange64,
        )

    def _forward(self, fb: ForwardBatch) -> torch.Tensor:
        """The model on a static batch whose attention metadata the capture / replay hook prepared."""
        hidden = self.model(fb.input_ids, fb.positions, fb)  # [bs, hidden]
        return self.model.compute_logits(hidden)  # [bs, vocab], model dtype

    @torch.inference_mode()
    def _capture_all(self) -> None:
        t0 = time.perf_counter()
        pool = self.graph_pool
        stream = torch.cuda.Stream(self.device)
        for bs in reversed(self.batch_sizes):
            fb = self.static_batches[bs]
            self.attn_backend.init_forward_metadata_capture(fb)
            # Warm-up outside the capture: Triton compiles, cuBLAS picks its kernels, the allocator fills,
            # FlashInfer plans (the first layer tells it the head counts).
            for _ in range(2):
                self._forward(fb)
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                out = self._forward(fb)
            pool = graph.pool()
            self.graphs[bs], self.outputs[bs] = graph, out
        self.graph_pool = pool
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - t0

    def can_run(self, fb: ForwardBatch) -> bool:
        return fb.forward_mode.is_decode and fb.batch_size <= self.max_bs

    def padded_size(self, bs: int) -> int:
        return self.batch_sizes[bisect.bisect_left(self.batch_sizes, bs)]

    def graph_inputs(self, bs: int) -> DecodeInputBlock | None:
        """The input block a decode batch of `bs` rows is replayed from; None when no graph holds it."""
        return self.inputs[self.padded_size(bs)] if 0 < bs <= self.max_bs else None

    def replay(self, fb: ForwardBatch) -> torch.Tensor:
        """Logits [bs, vocab] (model dtype) of a decode batch; valid until the next replay."""
        bs = fb.batch_size
        pbs = self.padded_size(bs)
        block = self.inputs[pbs]
        if fb.seq_lens.data_ptr() != block.seq_lens.data_ptr():  # not built into the block: copy it in
            if pbs > bs:
                # Rows an earlier batch left behind would otherwise attend and write KV for real requests.
                block.seq_lens[bs:].zero_()
                block.out_cache_loc[bs:].zero_()
            block.input_ids[:bs].copy_(fb.input_ids, non_blocking=True)
            block.positions[:bs].copy_(fb.positions, non_blocking=True)
            block.req_pool_indices[:bs].copy_(fb.req_pool_indices, non_blocking=True)
            block.seq_lens[:bs].copy_(fb.seq_lens, non_blocking=True)
            block.out_cache_loc[:bs].copy_(fb.out_cache_loc, non_blocking=True)
        static = self.static_batches[pbs]
        self.attn_backend.init_forward_metadata_replay(static, fb.seq_lens_cpu)
        if self.use_graphs:
            self.graphs[pbs].replay()
            return self.outputs[pbs][:bs]
        return self._forward(static)[:bs]
