"""Attention backend on FlashInfer (0.6.x) paged-KV wrappers, with page size 1 over our token pool.

With one token per page, a request's page list is exactly its `req_to_token` row, so the pool needs
no re-layout: `kv_indptr` is the running sum of `seq_lens` and `kv_indices` concatenates each
request's row up to its length. An fp8 pool is planned with `kv_data_type=float8_e4m3fn` and run
with the layer's `k_scale` / `v_scale`. Planning (index building + FlashInfer's scheduler) happens once per
batch, at the first layer, because `plan` needs the head counts that only the layer spec carries.
FlashInfer is imported when the backend is built, so the engine imports fine without it. When the
model hands over its rotary tables, q/k rotation and the K/V store are one Triton launch
(`rotary_kv_store`), as in the triton backend.

CUDA graphs: each captured decode batch size gets its own decode wrapper built with
`use_cuda_graph=True` over fixed indptr / indices / last-page-len buffers (the indices buffer, shared,
holds `batch size x min(context, pool)` entries, enough for any batch even when requests share a
cached prefix). In that mode FlashInfer's plan keeps the kernel grid and workspace layout fixed for the
batch size and only rewrites buffer contents, so `init_forward_metadata_replay` re-plans the wrapper
(indices built on the device, host lengths from the batch) before every replay. A padded row is one
page, scratch slot 0, the slot it has just written its own K/V to.

Dense prefill (on by default; TESSERA_FLASHINFER_DENSE_PREFILL=N sets the threshold, 0 turns it off): a
one-request extend of at least N new tokens (default 256) whose KV slots, prefix included, are one ascending
run (a long prompt on a fresh or quiet pool) runs FlashInfer's ragged kernel over `k_buffer[first:first +
len]`, a plain tensor, instead of the paged kernel's per-token page gathers. Measured on an H200 (8B shape,
100k-token prompt): TTFT 7,231 ms paged vs 6,586 ms dense (-9 %). Whether the slots form a run is the host's
bookkeeping (`ForwardBatch.kv_run_first`, from `Req.kv_run`), so the check costs no device sync and the next
chunk can be planned while this one runs. A cached prefix's run is unknown (its slots live on the device):
such a prompt takes the paged kernel.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch

from engine.attention.base import AttentionLayerSpec, BaseAttentionBackend
from engine.forward_batch import ForwardBatch
from kernels import RopeCache

WORKSPACE_BYTES = 128 * 1024 * 1024
# Rows of a captured decode batch that WORKSPACE_BYTES serves: graph mode sizes FlashInfer's split-KV
# scratch for the padded batch (at 512 rows it asked for 168 MB of tmp_v alone, measured on an H200).
WORKSPACE_GRAPH_ROWS = 256


def workspace_bytes(max_graph_rows: int) -> int:
    """The workspace for decode graphs of up to `max_graph_rows` rows: 128 MiB per 256 rows, at least 128 MiB."""
    return WORKSPACE_BYTES * max(1, -(-max_graph_rows // WORKSPACE_GRAPH_ROWS))


# The tensor-core decode kernel family, fixed (as SGLang does) rather than "auto", which picks FA3 on
# Hopper: FA3 tiles queries for prefill, and eager and captured decode must run the same kernels.
DECODE_KERNELS = "fa2"


DENSE_PREFILL_ENV = "TESSERA_FLASHINFER_DENSE_PREFILL"
DENSE_PREFILL_MIN_TOKENS = 256


class KVIndices(NamedTuple):
    indptr_cpu: torch.Tensor  # [B + 1] int32, host: plan() reads it on the host anyway
    indices: torch.Tensor  # [sum(seq_lens)] int32, device: KV slots of all requests, concatenated
    last_page_len_cpu: torch.Tensor  # [B] int32 ones (page size 1), host for the same reason


def build_kv_indices(
    req_to_token: torch.Tensor,  # [R, C] int32
    req_pool_indices: torch.Tensor,  # [B]
    seq_lens: torch.Tensor,  # [B] device lengths
    seq_lens_cpu: list[int],  # the same lengths on the host
) -> KVIndices:
    """Flatten each request's `req_to_token` row into FlashInfer's CSR page table, without a device sync."""
    device = req_to_token.device
    batch_size = len(seq_lens_cpu)
    total = sum(seq_lens_cpu)
    indptr_cpu = torch.zeros(batch_size + 1, dtype=torch.int32)
    indptr_cpu[1:] = torch.tensor(seq_lens_cpu, dtype=torch.int64).cumsum(0).to(torch.int32)
    starts = indptr_cpu[:-1].to(device, torch.int64, non_blocking=True)  # [B]
    # Which request each flattened entry belongs to; output_size keeps repeat_interleave from syncing.
    owner = torch.repeat_interleave(torch.arange(batch_size, device=device), seq_lens.to(torch.int64),
                                    output_size=total)  # [total]
    position = torch.arange(total, device=device) - starts[owner]  # [total]
    indices = req_to_token[req_pool_indices.to(torch.int64)[owner], position]  # [total] int32
    return KVIndices(indptr_cpu, indices, torch.ones(batch_size, dtype=torch.int32))


def build_padded_kv_indices(
    req_to_token: torch.Tensor,  # [R, C] int32
    req_pool_indices: torch.Tensor,  # [P] (rows past the real ones are ignored)
    seq_lens: torch.Tensor,  # [P] device lengths
    seq_lens_cpu: list[int],  # host lengths of the real rows, the first len(seq_lens_cpu)
    padded_batch_size: int,  # P
) -> KVIndices:
    """`build_kv_indices` for the real rows, then one page (scratch slot 0) for each padded row."""
    num_real = len(seq_lens_cpu)
    num_padded = padded_batch_size - num_real
    if num_real == 0:  # a graph being captured: every row is padding
        indptr_cpu = torch.arange(padded_batch_size + 1, dtype=torch.int32)
        indices = torch.zeros(padded_batch_size, dtype=torch.int32, device=req_to_token.device)
        return KVIndices(indptr_cpu, indices, torch.ones(padded_batch_size, dtype=torch.int32))
    kv = build_kv_indices(req_to_token, req_pool_indices[:num_real], seq_lens[:num_real], seq_lens_cpu)
    if num_padded == 0:
        return kv
    total = sum(seq_lens_cpu)
    indptr_cpu = torch.cat([kv.indptr_cpu, torch.arange(total + 1, total + num_padded + 1, dtype=torch.int32)])
    indices = torch.cat([kv.indices, kv.indices.new_zeros(num_padded)])  # [total + num_padded]
    return KVIndices(indptr_cpu, indices, torch.ones(padded_batch_size, dtype=torch.int32))


class PlanKey(NamedTuple):
    """What a plan depends on besides the batch: the layer's attention shape and the query dtype."""
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    q_dtype: torch.dtype


def _import_flashinfer():
    try:
        import flashinfer
    except ImportError as exc:
        raise ImportError(
            "--attention-backend flashinfer needs the `flashinfer-python` package (0.6.x) and a CUDA GPU; "
            "install it or use --attention-backend triton") from exc
    return flashinfer


class FlashInferAttentionBackend(BaseAttentionBackend):
    # The model may pass `rotary=(positions, RopeCache)` to `forward` and skip its own rotary launch.
    fuses_rotary = True

    def __init__(self, kv_pool, dense_prefill_min_tokens: int | None = None,
                 max_graph_rows: int = WORKSPACE_GRAPH_ROWS) -> None:
        super().__init__(kv_pool)
        self._flashinfer = _import_flashinfer()
        self.dense_prefill_min_tokens = (int(os.environ.get(DENSE_PREFILL_ENV, DENSE_PREFILL_MIN_TOKENS))
                                         if dense_prefill_min_tokens is None else dense_prefill_min_tokens)
        self._dense_prefill = None  # the ragged wrapper, built at first use
        self._dense_first: int | None = None  # first KV slot of the current batch when it runs dense
        self._workspace = torch.empty(workspace_bytes(max_graph_rows), dtype=torch.uint8, device=kv_pool.device)
        # FA3 (the "auto" choice on Hopper) wants q and KV of one dtype; 16-bit q over an fp8 pool takes
        # FA2, which upcasts the fp8 rows in the kernel.
        prefill_kernels = {"backend": DECODE_KERNELS} if kv_pool.is_fp8 else {}
        self._prefill = self._flashinfer.BatchPrefillWithPagedKVCacheWrapper(self._workspace, "NHD",
                                                                             **prefill_kernels)
        self._decode = None  # built at first plan: tensor-core use depends on the GQA group size
        self._decode_uses_tensor_cores: bool | None = None
        # CUDA graphs: a decode wrapper per captured batch size, and the layer shape they were planned for.
        self._graph_decode: dict[int, Any] = {}
        self._graph_indices: torch.Tensor | None = None  # [max_bs * C] int32, shared by the graph wrappers
        self._graph_plan_key: PlanKey | None = None
        self._plan_done: dict[Any, torch.cuda.Event] = {}  # per wrapper: its last plan's upload was queued
        # The current batch and its plan.
        self._batch: ForwardBatch | None = None
        self._graph_bs: int | None = None  # set while the batch is the graph runner's static batch
        self._kv: KVIndices | None = None
        self._plan_key: PlanKey | None = None
        self._wrapper = None  # the wrapper the current batch was planned on

    def init_forward_metadata(self, forward_batch: ForwardBatch) -> None:
        fb = forward_batch
        self._batch, self._graph_bs = fb, None
        self._dense_first = self._dense_start(fb)
        # The dense prefill reads the pool slice directly: no page table to build.
        self._kv = None if self._dense_first is not None else build_kv_indices(
            fb.req_to_token, fb.req_pool_indices, fb.seq_lens, fb.seq_lens_cpu)
        self._plan_key = self._wrapper = None

    def _dense_start(self, fb: ForwardBatch) -> int | None:
        """The first KV slot when this batch runs the dense prefill (see the module docstring)."""
        if (self.dense_prefill_min_tokens <= 0 or fb.forward_mode.is_decode or fb.batch_size != 1
                or self.kv_pool.is_fp8 or fb.extend_lens_cpu[0] < self.dense_prefill_min_tokens):
            return None
        return fb.kv_run_first  # the host's bookkeeping: no device sync before a long prefill

    def init_forward_metadata_capture(self, forward_batch: ForwardBatch) -> None:
        # Every row is padding now. The runner's warm-up forward plans at its first layer, outside the
        # capture (building this size's wrapper), so the captured forward finds the plan done.
        self._start_graph_batch(forward_batch, [])

    def init_forward_metadata_replay(self, forward_batch: ForwardBatch, seq_lens_cpu: list[int]) -> None:
        self._start_graph_batch(forward_batch, seq_lens_cpu)
        if self._graph_plan_key is not None:  # a replayed graph runs no Python: plan here
            self._plan_batch(self._graph_plan_key)

    def _start_graph_batch(self, fb: ForwardBatch, seq_lens_cpu: list[int]) -> None:
        self._batch, self._graph_bs, self._dense_first = fb, fb.batch_size, None
        self._kv = build_padded_kv_indices(fb.req_to_token, fb.req_pool_indices, fb.seq_lens, seq_lens_cpu,
                                           fb.batch_size)
        self._plan_key = self._wrapper = None

    def _decode_wrapper(self, group: int):
        # FlashInfer's advice (and SGLang's rule): the tensor-core decode kernel wins from group 4 up.
        use_tensor_cores = group >= 4
        if self._decode is None or self._decode_uses_tensor_cores != use_tensor_cores:
            self._decode = self._flashinfer.BatchDecodeWithPagedKVCacheWrapper(
                self._workspace, "NHD", use_tensor_cores=use_tensor_cores, backend=DECODE_KERNELS)
            self._decode_uses_tensor_cores = use_tensor_cores
        return self._decode

    def _graph_decode_wrapper(self, batch_size: int, group: int, context_len: int):
        wrapper = self._graph_decode.get(batch_size)
        if wrapper is not None:
            return wrapper
        device = self.kv_pool.device
        # A request holds at most min(context, pool) distinct slots, but requests may share slots (a
        # cached prefix), so the pool size alone does not bound a batch. Captures go largest first, so
        # the first buffer serves every size (a larger one would be new; earlier wrappers keep theirs).
        need = batch_size * min(context_len, self.kv_pool.size)
        if self._graph_indices is None or self._graph_indices.numel() < need:
            self._graph_indices = torch.empty(need, dtype=torch.int32, device=device)
        wrapper = self._flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            self._workspace, "NHD", use_cuda_graph=True, use_tensor_cores=group >= 4, backend=DECODE_KERNELS,
            paged_kv_indptr_buffer=torch.zeros(batch_size + 1, dtype=torch.int32, device=device),
            paged_kv_indices_buffer=self._graph_indices,
            paged_kv_last_page_len_buffer=torch.ones(batch_size, dtype=torch.int32, device=device))
        self._graph_decode[batch_size] = wrapper
        return wrapper

    def _plan(self, layer: AttentionLayerSpec, q_dtype: torch.dtype) -> None:
        key = PlanKey(layer.num_q_heads, layer.num_kv_heads, layer.head_dim, layer.scaling, q_dtype)
        if self._plan_key == key:
            return
        if self._graph_bs is not None and self._plan_key is not None:
            raise RuntimeError("FlashInfer decode graphs need every layer to have the same attention shape "
                               f"({self._plan_key} vs {key}); use --disable-cuda-graph")
        self._plan_batch(key)

    def _plan_batch(self, key: PlanKey) -> None:
        fb, kv = self._batch, self._kv
        assert fb is not None and (kv is not None or self._dense_first is not None)
        if fb.seq_lens.is_cuda and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("FlashInfer plan inside a CUDA-graph capture: warm the graph up first")
        hq, hkv, d = key.num_q_heads, key.num_kv_heads, key.head_dim
        dtypes = {"q_data_type": key.q_dtype, "kv_data_type": self.kv_pool.dtype}
        if fb.forward_mode.is_decode:  # the graph runner's static batches are decode batches
            if self._graph_bs is not None:
                # In cuda-graph mode plan copies indptr / indices / last_page_len into the wrapper's buffers.
                wrapper = self._graph_decode_wrapper(self._graph_bs, hq // hkv, fb.req_to_token.shape[1])
            else:
                wrapper = self._decode_wrapper(hq // hkv)
            self._guarded_plan(wrapper, kv.indptr_cpu, kv.indices, kv.last_page_len_cpu, hq, hkv, d, 1,
                               sm_scale=key.scaling, **dtypes)
            if self._graph_bs is not None:
                self._graph_plan_key = key
        elif self._dense_first is not None:
            if self._dense_prefill is None:
                self._dense_prefill = self._flashinfer.BatchPrefillWithRaggedKVCacheWrapper(self._workspace, "NHD")
            wrapper = self._dense_prefill
            qo_indptr = torch.tensor([0, fb.extend_lens_cpu[0]], dtype=torch.int32)
            kv_indptr = torch.tensor([0, fb.seq_lens_cpu[0]], dtype=torch.int32)
            self._guarded_plan(wrapper, qo_indptr, kv_indptr, hq, hkv, d, causal=True, sm_scale=key.scaling,
                               **dtypes)
        else:
            qo_indptr = torch.zeros(fb.batch_size + 1, dtype=torch.int32)
            qo_indptr[1:] = torch.tensor(fb.extend_lens_cpu, dtype=torch.int64).cumsum(0).to(torch.int32)
            wrapper = self._prefill
            self._guarded_plan(wrapper, qo_indptr, kv.indptr_cpu, kv.indices, kv.last_page_len_cpu, hq, hkv, d, 1,
                               causal=True, sm_scale=key.scaling, **dtypes)
        self._wrapper, self._plan_key = wrapper, key

    def _guarded_plan(self, wrapper, *args, **kwargs) -> None:
        # plan() stages its schedule in one pinned host buffer per wrapper and queues the upload without
        # waiting; with overlap scheduling the next plan of a wrapper can come while that upload still
        # waits in the stream. The wait is nearly free: the upload sits right behind the step whose
        # sampled tokens the host has already waited for.
        done = self._plan_done.get(wrapper)
        if done is None:
            done = self._plan_done[wrapper] = torch.cuda.Event()
        done.synchronize()  # returns at once before the first record
        wrapper.plan(*args, **kwargs)
        done.record()

    def forward(
        self,
        q: torch.Tensor,  # [T, Hq * D]
        k: torch.Tensor,  # [T, Hkv * D]
        v: torch.Tensor,  # [T, Hkv * D]
        layer: AttentionLayerSpec,
        forward_batch: ForwardBatch,
        rotary: tuple[torch.Tensor, RopeCache] | None = None,  # (positions [T], cos/sin tables): rotate here
    ) -> torch.Tensor:  # [T, Hq * D]
        fb = forward_batch
        if self._batch is not fb:
            self.init_forward_metadata(fb)
        # FlashInfer reads every key from the pool (prefill too), so k itself need not be rotated.
        q3, _, _, k_buffer, v_buffer = self.write_new_kv(q, k, v, layer, fb, rotary, rotate_k_in_place=False)
        self._plan(layer, q.dtype)
        paged_kv = (k_buffer.unsqueeze(1), v_buffer.unsqueeze(1))  # [N, page=1, Hkv, D] (NHD)
        scales = {}
        if self.kv_pool.is_fp8:
            # The plan took kv_data_type=fp8; run() folds k_scale into sm_scale and multiplies the
            # output by v_scale (host floats, so a captured graph bakes them in: they never change).
            k_scale, v_scale = self.kv_pool.scales(layer.layer_id)
            scales = {"k_scale": k_scale, "v_scale": v_scale}
        if self._dense_first is not None:  # one request, its KV one run of slots: read it as a plain tensor
            kv_range = slice(self._dense_first, self._dense_first + fb.seq_lens_cpu[0])
            # The ragged kernel takes q's row and head strides, so q stays a view of the fused QKV output: a
            # dense copy cost 164 us per layer per 16k-token chunk (~30 ms of a 100k prompt's TTFT, H200).
            out = self._wrapper.run(q3, k_buffer[kv_range], v_buffer[kv_range])
        else:
            out = self._wrapper.run(q3.contiguous(), paged_kv, **scales)  # [T, Hq, D]; the paged kernels want dense q
        return out.view(q.shape[0], layer.num_q_heads * layer.head_dim)
