"""Attention backends behind one interface (`BaseAttentionBackend`); `create_attention_backend` picks one."""

from __future__ import annotations

import logging

from engine.args import ArgsError
from engine.attention.base import AttentionLayerSpec, BaseAttentionBackend

logger = logging.getLogger(__name__)

# Head sizes FlashInfer 0.6 builds its prefill and decode kernels for.
FLASHINFER_HEAD_DIMS = (64, 128, 256)


def lacks_flashinfer_kernels(backend: str, head_dim: int) -> bool:
    """True when `backend` runs FlashInfer kernels (flashinfer, hybrid) and FlashInfer builds none for
    `head_dim`."""
    return backend in ("flashinfer", "hybrid") and head_dim not in FLASHINFER_HEAD_DIMS


def attention_backend_for(args, head_dim: int) -> str:
    """The backend this model runs on: the chosen (or default) one, except that the default hybrid falls
    back to triton for a head size FlashInfer has no kernels for. An explicit FlashInfer choice that
    cannot serve the head size is a one-line ArgsError here, not a kernel-build traceback later."""
    name = args.resolved_attention_backend
    if not lacks_flashinfer_kernels(name, head_dim):
        return name
    if args.attention_backend is None:
        logger.info("attention: head size %d has no FlashInfer kernels; using triton (the default hybrid needs "
                    "one of %s)", head_dim, FLASHINFER_HEAD_DIMS)
        return "triton"
    sizes = ", ".join(map(str, FLASHINFER_HEAD_DIMS))
    raise ArgsError(f"--attention-backend {name}: FlashInfer has no kernels for this model's head size {head_dim} "
                    f"(it builds {sizes}); use --attention-backend triton")


def create_attention_backend(name: str, kv_pool, device: str, long_context_threshold: int = 131072,
                             max_graph_rows: int = 256) -> BaseAttentionBackend:
    """`long_context_threshold`: hybrid only (decode batches longer than it go to flashinfer).
    `max_graph_rows`: the largest captured decode batch (FlashInfer sizes its workspace for it)."""
    if name == "torch_native":
        from engine.attention.torch_native import TorchNativeAttentionBackend

        return TorchNativeAttentionBackend(kv_pool)
    if name == "triton":
        from engine.attention.triton_backend import TritonAttentionBackend

        return TritonAttentionBackend(kv_pool)
    if name == "flashinfer":
        from engine.attention.flashinfer_backend import FlashInferAttentionBackend

        return FlashInferAttentionBackend(kv_pool, max_graph_rows=max_graph_rows)
    if name == "hybrid":
        from engine.attention.flashinfer_backend import FlashInferAttentionBackend
        from engine.attention.hybrid import HybridAttentionBackend
        from engine.attention.triton_backend import TritonAttentionBackend

        # One FlashInfer backend serves prefill and long decode (it keeps its wrappers per mode).
        flashinfer = FlashInferAttentionBackend(kv_pool, max_graph_rows=max_graph_rows)
        return HybridAttentionBackend(kv_pool, prefill=flashinfer, decode_short=TritonAttentionBackend(kv_pool),
                                      decode_long=flashinfer, long_context_threshold=long_context_threshold)
    raise ValueError(f"unknown attention backend {name!r}; choose torch_native, triton, flashinfer or hybrid")


__all__ = ["FLASHINFER_HEAD_DIMS", "AttentionLayerSpec", "BaseAttentionBackend", "attention_backend_for",
           "create_attention_backend", "lacks_flashinfer_kernels"]
