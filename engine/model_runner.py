"""ModelRunner: one rank's model, KV pools and attention backend; runs a ForwardBatch to logits.

Sizing happens here because it needs the loaded weights: on GPU the KV pool takes what
`mem_fraction_static` leaves after weights; on CPU `max_total_tokens` or a RAM-based default.
"""

from __future__ import annotations

import logging
import os
import time

import psutil
import torch

from engine.args import ServerArgs
from engine.attention import attention_backend_for, create_attention_backend
from engine.attention.hybrid import HybridAttentionBackend
from engine.cuda_graph_runner import CudaGraphRunner, default_graph_max_bs
from engine.distributed.parallel_state import TPContext
from engine.forward_batch import ForwardBatch
from engine.graph_inputs import DecodeInputBlock
from engine.hybrid_graphs import HybridGraphRunner
from engine.mem.kv_pool import FP8_KV_DTYPE, KVPool
from engine.mem.kv_scales import read_kv_scales
from engine.mem.req_to_token import ReqToTokenPool
from engine.model_config import ModelConfig, create_model_config
from engine.model_loader import check_fp8_device, load_model
from engine.schedule_policy import default_chunked_prefill_size
from engine.weight_files import safetensors_files

logger = logging.getLogger(__name__)

GiB = 1 << 30
CPU_DEFAULT_MAX_TOKENS = 131072


class OutOfMemoryAtStartError(RuntimeError):
    pass


# Kept free on the device beyond the KV cache: activations, NCCL buffers, CUDA graphs' workspace.
GPU_RESERVE_BYTES = 512 << 20


def resolve_kv_cache_dtype(kv_cache_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """--kv-cache-dtype to the pool's storage dtype; auto is the model's dtype."""
    if kv_cache_dtype in ("fp8_e4m3", "fp8"):
        return FP8_KV_DTYPE
    if kv_cache_dtype in ("bf16", "bfloat16"):
        return torch.bfloat16
    return model_dtype


def kv_budget_bytes(total: int, free_before: int, free_after: int, fraction: float) -> float:
    """Bytes for the KV cache: this instance may take `fraction` of the device (--mem-fraction-static, alias
    --gpu-memory-utilization-limit) counting only its own use (weights loaded since `free_before`), so two
    instances at 0.5 share one GPU; never more than is actually free, less a reserve."""
    own = free_before - free_after
    return min(total * fraction - own, free_after - GPU_RESERVE_BYTES)


class ModelRunner:
    def __init__(self, args: ServerArgs, model_config: ModelConfig, tp: TPContext, device: torch.device) -> None:
        self.args = args
        self.model_config = model_config
        self.tp = tp
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # set_device / mem_get_info want an index
        self.device = device
        t0 = time.perf_counter()
        total = 0
        if device.type == "cuda":
            torch.cuda.set_device(device)
            free_before, total = torch.cuda.mem_get_info(device)
        self.model = load_model(args.model_path, args.load_format, model_config, tp, device,
                                lm_head_quantization=args.lm_head_quantization)
        weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        logger.info("rank %d: weights loaded in %.1fs, %.2f GiB (%s)", tp.rank, time.perf_counter() - t0,
                    weight_bytes / GiB, model_config.dtype)
        self.num_kv_heads = model_config.kv_heads_per_rank(tp.size)
        self.kv_dtype = resolve_kv_cache_dtype(args.kv_cache_dtype, model_config.dtype)
        k_scales = v_scales = None
        if self.kv_dtype == FP8_KV_DTYPE:
            check_fp8_device(device, "--kv-cache-dtype fp8_e4m3", "use --kv-cache-dtype auto")
            k_scales, v_scales = self._kv_scales()
        # Capacity counts the storage dtype: an fp8 pool holds twice the tokens of a 16-bit one.
        bpt = KVPool.bytes_per_token(model_config.num_layers, self.num_kv_heads, model_config.head_dim,
                                     self.kv_dtype)
        if device.type == "cuda":
            max_tokens = self._gpu_kv_tokens(free_before, total, bpt)
        else:
            max_tokens = self._cpu_kv_tokens(bpt)
        self.max_total_tokens = max_tokens
        self.max_running_requests = min(args.max_running_requests or (256 if device.type == "cpu" else 1024),
                                        max_tokens)
        self.kv_pool = KVPool(max_tokens, model_config.num_layers, self.num_kv_heads, model_config.head_dim,
                              self.kv_dtype, device, k_scales=k_scales, v_scales=v_scales)
        self.req_pool = ReqToTokenPool(self.max_running_requests, model_config.context_len + 1, device)
        # The largest captured decode batch (the FlashInfer workspace is sized for it too).
        self.graph_max_bs = min(args.cuda_graph_max_bs or default_graph_max_bs(total), self.max_running_requests)
        self.chunked_prefill_size = args.chunked_prefill_size or default_chunked_prefill_size(total)
        self.attention_backend_name = attention_backend_for(args, model_config.head_dim)
        self.attn_backend = create_attention_backend(self.attention_backend_name, self.kv_pool, str(device),
                                                     args.hybrid_long_context_threshold,
                                                     max_graph_rows=self.graph_max_bs)
        self.model.attn_backend = self.attn_backend
        # Batch-1 decode through fused Triton GEMVs (norms/SiLU as prologues, residual adds as epilogues).
        self.model.fused_gemv = not args.disable_fused_gemv and self.model.supports_fused_gemv()
        self.model.lm_head_gemv = not args.disable_fused_gemv and self.model.supports_lm_head_gemv()
        kv_dtype_name = str(self.kv_dtype).removeprefix("torch.")
        logger.info("rank %d: KV cache %d tokens (%.2f GiB, %s, %d bytes per token), max running requests %d, "
                    "attention %s, prefill chunk %d tokens", tp.rank, max_tokens, max_tokens * bpt / GiB, kv_dtype_name,
                    bpt, self.max_running_requests, self.attention_backend_name, self.chunked_prefill_size)
        if isinstance(self.attn_backend, HybridAttentionBackend):
            logger.info("rank %d: attention: %s", tp.rank, self.attn_backend.describe())
        self.graph_runner = self._create_graph_runner()

    def _kv_scales(self) -> tuple[list[float] | None, list[float] | None]:
        """FP8 KV scales: the checkpoint's k_scale / v_scale (`engine.mem.kv_scales`), else 1.0 everywhere."""
        num_layers = self.model_config.num_layers
        files = [] if self.args.load_format == "dummy" else safetensors_files(self.args.model_path)
        scales = read_kv_scales(files, num_layers)
        if scales is None:
            logger.warning("rank %d: fp8 KV cache with k/v scales 1.0 (the checkpoint has no k_scale / v_scale); "
                           "K and V beyond +-448 saturate", self.tp.rank)
            return None, None
        logger.info("rank %d: fp8 KV cache with the checkpoint's scales (%d tensors; k %.3g..%.3g, v %.3g..%.3g)",
                    self.tp.rank, scales.num_found, min(scales.k), max(scales.k), min(scales.v), max(scales.v))
        return scales.k, scales.v

    def _create_graph_runner(self) -> CudaGraphRunner | HybridGraphRunner | None:
        if self.device.type != "cuda" or self.args.disable_cuda_graph:
            return None
        backend = self.attention_backend_name
        if backend not in ("triton", "flashinfer", "hybrid"):
            # torch_native loops over requests with host lengths inside its forward: nothing to replay.
            logger.info("rank %d: CUDA graphs off: the %s attention backend is not capturable "
                        "(use triton or flashinfer)", self.tp.rank, backend)
            return None
        max_bs = self.graph_max_bs
        free_before, _ = torch.cuda.mem_get_info(self.device)
        if isinstance(self.attn_backend, HybridAttentionBackend):
            runner = HybridGraphRunner(self.model, self.attn_backend, self.req_pool.req_to_token, max_bs,
                                       self.device, max_seq_len=self.model_config.context_len)
        else:
            runner = CudaGraphRunner(self.model, self.attn_backend, self.req_pool.req_to_token, max_bs,
                                     self.device)
        free_after, _ = torch.cuda.mem_get_info(self.device)
        logger.info("rank %d: captured CUDA graphs for decode batch sizes %s in %.1fs (%.2f GiB)",
                    self.tp.rank, runner.batch_sizes, runner.capture_seconds, (free_before - free_after) / GiB)
        return runner

    def _gpu_kv_tokens(self, free_before: int, total: int, bpt: int) -> int:
        free_after, _ = torch.cuda.mem_get_info(self.device)
        used_by_others = total - free_before
        budget = kv_budget_bytes(total, free_before, free_after, self.args.mem_fraction_static)
        draft_bpt, draft_weights = self._draft_model_share()
        if draft_bpt:
            # The draft model loads after this pool and holds as many tokens: split the budget so both fit
            # inside --mem-fraction-static (else its pool takes the activations' headroom: OOM at the first step).
            budget = (budget - draft_weights) * bpt / (bpt + draft_bpt)
        tokens = int(budget // bpt)
        if self.args.max_total_tokens is not None:
            tokens = min(tokens, self.args.max_total_tokens)
        tokens = self._min_across_ranks(tokens)
        if tokens < 16:
            raise OutOfMemoryAtStartError(
                f"not enough GPU memory for the KV cache: {total / GiB:.1f} GiB total x mem_fraction_static "
                f"{self.args.mem_fraction_static} = {total * self.args.mem_fraction_static / GiB:.1f} GiB, "
                f"weights and other use {(total - free_after - used_by_others) / GiB:.1f} GiB, others "
                f"{used_by_others / GiB:.1f} GiB, leaving {max(budget, 0) / GiB:.2f} GiB "
                f"({bpt} bytes per token); raise --mem-fraction-static or use a larger --tp-size")
        return tokens

    def _draft_model_share(self) -> tuple[int, int]:
        """(KV bytes per token, weight bytes on this rank) of the speculative draft model that will share this
        device, from its config and checkpoint files; (0, 0) without a draft model."""
        args = self.args
        if args.speculative_mode != "draft" or not args.speculative_model:
            return 0, 0
        cfg = create_model_config(args.for_draft_model(), self.device.type)
        kv_dtype = resolve_kv_cache_dtype(args.kv_cache_dtype, cfg.dtype)
        bpt = KVPool.bytes_per_token(cfg.num_layers, cfg.kv_heads_per_rank(self.tp.size), cfg.head_dim, kv_dtype)
        files = [] if args.load_format == "dummy" else safetensors_files(args.speculative_model)
        return bpt, sum(os.path.getsize(f) for f in files) // self.tp.size

    def _cpu_kv_tokens(self, bpt: int) -> int:
        avail = psutil.virtual_memory().available
        if self.args.max_total_tokens is not None:
            need = self.args.max_total_tokens * bpt
            if need > avail * 0.9:
                raise OutOfMemoryAtStartError(
                    f"--max-total-tokens {self.args.max_total_tokens} needs {need / GiB:.2f} GiB of KV cache "
                    f"({bpt} bytes per token) but only {avail / GiB:.2f} GiB of RAM is available")
            return self.args.max_total_tokens
        tokens = min(int(avail * 0.2 // bpt), CPU_DEFAULT_MAX_TOKENS)
        if tokens < 16:
            raise OutOfMemoryAtStartError(f"not enough RAM for a KV cache: {avail / GiB:.2f} GiB available, "
                                          f"{bpt} bytes per token")
        return tokens

    def _min_across_ranks(self, value: int) -> int:
        if self.tp.size == 1:
            return value
        t = torch.tensor([value], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return int(t.item())

    def decode_inputs(self, batch_size: int) -> DecodeInputBlock | None:
        """Where a decode batch of `batch_size` rows should be built (engine.batch_builder): the input block of
        the CUDA graph that will replay it; None when no graph will."""
        return self.graph_runner.graph_inputs(batch_size) if self.graph_runner is not None else None

    @torch.inference_mode()
    def forward(self, fb: ForwardBatch, fp32: bool = True) -> torch.Tensor:
        """Logits for the rows in fb.logits_indices: [num_logit_rows, vocab], fp32 unless `fp32=False` (then the
        model's dtype, and a graph replay's may be a view of its output buffer: read it before the next replay)."""
        if self.graph_runner is not None and self.graph_runner.can_run(fb):
            logits = self.graph_runner.replay(fb)  # every row's
            if fb.logits_indices is not None and fb.logits_indices.numel() != fb.batch_size:
                logits = logits[fb.logits_indices]  # some rows only (speculative drafts: each row's last)
        else:
            self.attn_backend.init_forward_metadata(fb)
            hidden = self.model(fb.input_ids, fb.positions, fb)  # [T, hidden]
            logits = self.model.compute_logits(hidden[fb.logits_indices])
        return logits.float() if fp32 else logits
