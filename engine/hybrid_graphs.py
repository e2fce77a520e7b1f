"""HybridGraphRunner: decode CUDA graphs for the hybrid attention backend (engine/attention/hybrid.py).

A graph replays the kernels it captured, so a graph set captured with triton's decode kernel cannot
run FlashInfer's. This runner captures one `CudaGraphRunner` set per decode sub-backend (sharing one
graph memory pool: they never replay at the same time) and picks the set per batch from the host
lengths (`HybridAttentionBackend.is_long`) before replaying: the choice is made outside the graph. When
no sequence can exceed the threshold (context length <= threshold), only the short set is captured.
Same interface as CudaGraphRunner for the model runner: `can_run`, `replay`, `batch_sizes`,
`capture_seconds`.
"""

from __future__ import annotations

import torch

from engine.attention.hybrid import HybridAttentionBackend
from engine.cuda_graph_runner import CudaGraphRunner
from engine.forward_batch import ForwardBatch
from engine.graph_inputs import DecodeInputBlock


class HybridGraphRunner:
    def __init__(self, model: torch.nn.Module, hybrid: HybridAttentionBackend, req_to_token: torch.Tensor,
                 max_bs: int, device: torch.device, max_seq_len: int, use_graphs: bool = True,
                 runner_cls=CudaGraphRunner) -> None:
        self.hybrid = hybrid
        self.short = runner_cls(model, hybrid.pinned(hybrid.decode_short), req_to_token, max_bs, device,
                                use_graphs=use_graphs)
        self.long: CudaGraphRunner | None = None
        if max_seq_len > hybrid.long_context_threshold:
            self.long = runner_cls(model, hybrid.pinned(hybrid.decode_long), req_to_token, max_bs, device,
                                   use_graphs=use_graphs, graph_pool=getattr(self.short, "graph_pool", None),
                                   inputs=getattr(self.short, "inputs", None))
        self.batch_sizes = self.short.batch_sizes
        self.max_bs = self.short.max_bs  # both sets hold the same sizes (speculative verify rows read it)
        self.capture_seconds = self.short.capture_seconds + (self.long.capture_seconds if self.long else 0.0)
        self.num_long_replays = 0  # how many replays took the long-context set (tests and logs read it)
        self.num_short_replays = 0

    def can_run(self, fb: ForwardBatch) -> bool:
        return self.short.can_run(fb)

    def graph_inputs(self, bs: int) -> DecodeInputBlock | None:
        """Both sets read the short set's input blocks: a batch is built before its set is chosen."""
        return self.short.graph_inputs(bs)

    def runner_for(self, fb: ForwardBatch):
        if self.long is not None and self.hybrid.is_long(fb.seq_lens_cpu):
            return self.long
        return self.short

    def replay(self, fb: ForwardBatch) -> torch.Tensor:
        runner = self.runner_for(fb)
        if runner is self.long:
            self.num_long_replays += 1
        else:
            self.num_short_replays += 1
        return runner.replay(fb)
