"""Attention backends behind one interface (`BaseAttentionBackend`); `create_attention_backend` picks one."""

from __future__ import annotations

from engine.attention.base import AttentionLayerSpec, BaseAttentionBackend


def create_attention_backend(name: str, kv_pool, device: str,
                             long_context_threshold: int = 32768) -> BaseAttentionBackend:
    """`long_context_threshold`: hybrid only (decode batches longer than it go to flashinfer)."""
    if name == "torch_native":
        from engine.attention.torch_native import TorchNativeAttentionBackend

        return TorchNativeAttentionBackend(kv_pool)
    if name == "triton":
        from engine.attention.triton_backend import TritonAttentionBackend

        return TritonAttentionBackend(kv_pool)
    if name == "flashinfer":
        from engine.attention.flashinfer_backend import FlashInferAttentionBackend

        return FlashInferAttentionBackend(kv_pool)
    if name == "hybrid":
        from engine.attention.flashinfer_backend import FlashInferAttentionBackend
        from engine.attention.hybrid import HybridAttentionBackend
        from engine.attention.triton_backend import TritonAttentionBackend

        # One FlashInfer backend serves prefill and long decode (it keeps its wrappers per mode).
        flashinfer = FlashInferAttentionBackend(kv_pool)
        return HybridAttentionBackend(kv_pool, prefill=flashinfer, decode_short=TritonAttentionBackend(kv_pool),
                                      decode_long=flashinfer, long_context_threshold=long_context_threshold)
    raise ValueError(f"unknown attention backend {name!r}; choose torch_native, triton, flashinfer or hybrid")


__all__ = ["AttentionLayerSpec", "BaseAttentionBackend", "create_attention_backend"]
