"""HybridAttentionBackend: each batch goes to the backend that is fastest for its phase and length.

Measured on an H200 (8B shape): FlashInfer's prefill is 2x triton's at 100k tokens. Its decode was
faster at long context (127 vs 88 tok/s at 100k, 2026-12-01), until triton's decode tiles were retuned:
one request at 100k now decodes at 136.1 tok/s on triton vs 132.5 on FlashInfer (2026-12-03), and
triton was always faster at batch 1 and short context. So `--attention-backend hybrid` (the CUDA default
when FlashInfer is installed) sends the following, with a default threshold of 131072 tokens (all of
Llama-3.1's context: FlashInfer decodes only beyond what was measured, and its graphs are captured only
for models whose context exceeds the threshold)

    EXTEND (prefill, mixed chunks)                         -> `prefill`       (flashinfer)
    DECODE, longest sequence <= long_context_threshold     -> `decode_short`  (triton)
    DECODE, longest sequence >  long_context_threshold     -> `decode_long`   (flashinfer)

The delegation is thin: sub-backends share the one KV pool (token-granular, page size 1: FlashInfer
reads it as pages of one token through `req_to_token`, triton reads it directly), so a sequence
prefilled by one is decoded by the other with no conversion. The choice reads host lengths only.

CUDA graphs: a captured graph freezes whichever kernels ran at capture, so the choice cannot be made
inside it. `HybridGraphRunner` (engine/hybrid_graphs.py) captures one graph set per decode
sub-backend (`pinned(...)` routes the capture and each replay to it) and picks the set per batch from
the host lengths before replaying.
"""

from __future__ import annotations

from engine.attention.base import AttentionLayerSpec, BaseAttentionBackend
from engine.forward_batch import ForwardBatch


class HybridAttentionBackend(BaseAttentionBackend):
    def __init__(self, kv_pool, prefill: BaseAttentionBackend, decode_short: BaseAttentionBackend,
                 decode_long: BaseAttentionBackend, long_context_threshold: int,
                 names: tuple[str, str, str] = ("flashinfer", "triton", "flashinfer")) -> None:
        super().__init__(kv_pool)
        for sub in (prefill, decode_short, decode_long):
            assert sub.kv_pool is kv_pool, "hybrid sub-backends must share one KV pool"
        self.prefill = prefill
        self.decode_short = decode_short
        self.decode_long = decode_long
        self.long_context_threshold = long_context_threshold
        self.names = names
        # The model hands its rotary tables over only if every sub-backend can take them.
        self.fuses_rotary = all(getattr(b, "fuses_rotary", False) for b in (prefill, decode_short, decode_long))
        self._batch: ForwardBatch | None = None
        self._active: BaseAttentionBackend | None = None

    # ---- the choice ---------------------------------------------------------------------------
    def is_long(self, seq_lens_cpu: list[int]) -> bool:
        return max(seq_lens_cpu, default=0) > self.long_context_threshold

    def pick(self, forward_batch: ForwardBatch) -> BaseAttentionBackend:
        if forward_batch.forward_mode.is_extend:
            return self.prefill
        return self.decode_long if self.is_long(forward_batch.seq_lens_cpu) else self.decode_short

    def describe(self) -> str:
        prefill, short, long = self.names
        return (f"prefill={prefill} decode={short} (<= {self.long_context_threshold} tokens) / "
                f"{long} (> {self.long_context_threshold})")

    def route(self, forward_batch: ForwardBatch, backend: BaseAttentionBackend) -> None:
        """Sends the layers' calls for `forward_batch` to `backend` (graph capture and replay use this)."""
        self._batch, self._active = forward_batch, backend

    def pinned(self, backend: BaseAttentionBackend) -> PinnedDecode:
        return PinnedDecode(self, backend)

    # ---- BaseAttentionBackend -----------------------------------------------------------------
    def init_forward_metadata(self, forward_batch: ForwardBatch) -> None:
        backend = self.pick(forward_batch)
        self.route(forward_batch, backend)
        backend.init_forward_metadata(forward_batch)

    def forward(self, q, k, v, layer: AttentionLayerSpec, forward_batch: ForwardBatch, rotary=None):
        if self._batch is not forward_batch:  # a caller that skipped init_forward_metadata
            self.init_forward_metadata(forward_batch)
        if rotary is None:
            return self._active.forward(q, k, v, layer, forward_batch)
        return self._active.forward(q, k, v, layer, forward_batch, rotary=rotary)


class PinnedDecode:
    """The graph-runner hooks of one decode sub-backend, routing the hybrid to it: the runner that
    captures (and replays) graphs for that sub-backend holds this as its attention backend."""

    def __init__(self, hybrid: HybridAttentionBackend, backend: BaseAttentionBackend) -> None:
        self.hybrid = hybrid
        self.backend = backend

    def init_forward_metadata_capture(self, forward_batch: ForwardBatch) -> None:
        self.hybrid.route(forward_batch, self.backend)
        self.backend.init_forward_metadata_capture(forward_batch)

    def init_forward_metadata_replay(self, forward_batch: ForwardBatch, seq_lens_cpu: list[int]) -> None:
        self.hybrid.route(forward_batch, self.backend)
        self.backend.init_forward_metadata_replay(forward_batch, seq_lens_cpu)
