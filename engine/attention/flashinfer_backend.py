"""Attention backend on FlashInfer (0.6.x) paged-KV wrappers, with page size 1 over our token pool.

With one token per page, a request's page list is exactly its `req_to_token` row, so the pool needs
no re-layout: `kv_indptr` is the running sum of `seq_lens` and `kv_indices` concatenates each
request's row up to its length. Planning (index building + FlashInfer's scheduler) happens once per
batch, at the first layer, because `plan` needs the head counts that only the layer spec carries.
FlashInfer is imported when the backend is built, so the engine imports fine without it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from engine.attention.base import AttentionLayerSpec, BaseAttentionBackend
from engine.forward_batch import ForwardBatch
from kernels import store_kv

WORKSPACE_BYTES = 128 * 1024 * 1024


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


def _import_flashinfer():
    try:
        import flashinfer
    except ImportError as exc:
        raise ImportError(
            "--attention-backend flashinfer needs the `flashinfer-python` package (0.6.x) and a CUDA GPU; "
            "install it or use --attention-backend triton") from exc
    return flashinfer


class FlashInferAttentionBackend(BaseAttentionBackend):
    def __init__(self, kv_pool) -> None:
        super().__init__(kv_pool)
        self._flashinfer = _import_flashinfer()
        self._workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=kv_pool.device)
        self._prefill = self._flashinfer.BatchPrefillWithPagedKVCacheWrapper(self._workspace, "NHD")
        self._decode = None  # built at first plan: tensor-core use depends on the GQA group size
        self._decode_uses_tensor_cores: bool | None = None
        self._batch: ForwardBatch | None = None
        self._kv: KVIndices | None = None
        self._plan_key: tuple | None = None

    def init_forward_metadata(self, forward_batch: ForwardBatch) -> None:
        fb = forward_batch
        self._batch = fb
        self._kv = build_kv_indices(fb.req_to_token, fb.req_pool_indices, fb.seq_lens, fb.seq_lens_cpu)
        self._plan_key = None

    def _decode_wrapper(self, group: int):
        # FlashInfer's advice (and SGLang's rule): the tensor-core decode kernel wins from group 4 up.
        use_tensor_cores = group >= 4
        if self._decode is None or self._decode_uses_tensor_cores != use_tensor_cores:
            self._decode = self._flashinfer.BatchDecodeWithPagedKVCacheWrapper(
                self._workspace, "NHD", use_tensor_cores=use_tensor_cores)
            self._decode_uses_tensor_cores = use_tensor_cores
        return self._decode

    def _plan(self, layer: AttentionLayerSpec, q_dtype: torch.dtype) -> None:
        fb, kv = self._batch, self._kv
        assert fb is not None and kv is not None
        hq, hkv, d = layer.num_q_heads, layer.num_kv_heads, layer.head_dim
        key = (hq, hkv, d, layer.scaling, q_dtype)
        if self._plan_key == key:
            return
        kv_dtype = self.kv_pool.dtype
        if fb.forward_mode.is_decode:
            self._decode_wrapper(hq // hkv).plan(
                kv.indptr_cpu, kv.indices, kv.last_page_len_cpu, hq, hkv, d, 1,
                q_data_type=q_dtype, kv_data_type=kv_dtype, sm_scale=layer.scaling)
        else:
            qo_indptr = torch.zeros(fb.batch_size + 1, dtype=torch.int32)
            qo_indptr[1:] = torch.tensor(fb.extend_lens_cpu, dtype=torch.int64).cumsum(0).to(torch.int32)
            self._prefill.plan(
                qo_indptr, kv.indptr_cpu, kv.indices, kv.last_page_len_cpu, hq, hkv, d, 1,
                causal=True, sm_scale=layer.scaling, q_data_type=q_dtype, kv_data_type=kv_dtype)
        self._plan_key = key

    def forward(
        self,
        q: torch.Tensor,  # [T, Hq * D]
        k: torch.Tensor,  # [T, Hkv * D]
        v: torch.Tensor,  # [T, Hkv * D]
        layer: AttentionLayerSpec,
        forward_batch: ForwardBatch,
    ) -> torch.Tensor:  # [T, Hq * D]
        fb = forward_batch
        if self._batch is not fb:
            self.init_forward_metadata(fb)
        num_tokens = q.shape[0]
        hq, hkv, d = layer.num_q_heads, layer.num_kv_heads, layer.head_dim
        k_buffer, v_buffer = self.kv_pool.get_kv(layer.layer_id)  # [N, Hkv, D]
        store_kv(k_buffer, v_buffer, fb.out_cache_loc, k.view(num_tokens, hkv, d), v.view(num_tokens, hkv, d))
        self._plan(layer, q.dtype)
        q3 = q.reshape(num_tokens, hq, d).contiguous()  # [T, Hq, D]; FlashInfer wants dense q
        paged_kv = (k_buffer.unsqueeze(1), v_buffer.unsqueeze(1))  # [N, page=1, Hkv, D] (NHD)
        wrapper = self._decode if fb.forward_mode.is_decode else self._prefill
        out = wrapper.run(q3, paged_kv)  # [T, Hq, D]
        return out.view(num_tokens, hq * d)
