"""Attention backends behind one interface (`BaseAttentionBackend`); `create_attention_backend` picks one."""

from __future__ import annotations

from engine.attention.base import AttentionLayerSpec, BaseAttentionBackend


def create_attention_backend(name: str, kv_pool, device: str) -> BaseAttentionBackend:
    if name == "torch_native":
        from engine.attention.torch_native import TorchNativeAttentionBackend

        return TorchNativeAttentionBackend(kv_pool)
    if name == "triton":
        from engine.attention.triton_backend import TritonAttentionBackend

        return TritonAttentionBackend(kv_pool)
    if name == "flashinfer":
        from engine.attention.flashinfer_backend import FlashInferAttentionBackend

        return FlashInferAttentionBackend(kv_pool)
    raise ValueError(f"unknown attention backend {name!r}; choose torch_native, triton or flashinfer")


__all__ = ["AttentionLayerSpec", "BaseAttentionBackend", "create_attention_backend"]
