"""Builds the model on its device and fills its weights (safetensors, single or sharded, or dummy)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

from engine.args import ArgsError
from engine.distributed.parallel_state import TPContext
from engine.model_config import ModelConfig
from engine.models.registry import resolve_model_class
from engine.quant.base import process_weights_after_loading
from engine.weight_files import WeightLoadError, safetensors_files

logger = logging.getLogger(__name__)


def iterate_weights(files: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for path in files:
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def load_model(model_path: str, load_format: str, model_config: ModelConfig, tp: TPContext,
               device: torch.device, lm_head_quantization: str | None = None) -> torch.nn.Module:
    cls = resolve_model_class(model_config.hf_config)
    files = [] if load_format == "dummy" else safetensors_files(model_path)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(model_config.dtype)
    try:
        with torch.device(device):
            model = cls(model_config.hf_config, tp, max_positions=max(model_config.context_len, 1) + 1,
                        quant_config=model_config.quant_config)
    finally:
        torch.set_default_dtype(prev)
    # rotary tables stay fp32 (built before the dtype switch matters): keep them on the device
    model.eval()
    if load_format == "dummy":
        _fill_dummy(model)
    else:
        loaded = model.load_weights(iterate_weights(files))
        expected = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        missing = sorted(expected - loaded)
        if missing:
            raise WeightLoadError(f"checkpoint is missing {len(missing)} weight(s), e.g. {missing[0]}")
    # Quantized layers repack / dequantize once their tensors are all in (engine/quant).
    process_weights_after_loading(model)
    if lm_head_quantization == "fp8":
        quantize_lm_head_fp8(model, device)
    return model


def check_fp8_device(device: torch.device, setting: str, instead: str) -> None:
    """Triton converts e4m3 in hardware from sm_89 (Ada, Hopper) on; on an older GPU `setting` fails at start,
    naming what to use `instead`."""
    if device.type != "cuda":
        return
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ArgsError(f"{setting} needs a GPU of compute capability 8.9 or newer (Ada, Hopper); this one is "
                        f"{major}.{minor}: {instead}")


def quantize_lm_head_fp8(model: torch.nn.Module, device: torch.device) -> None:
    """--lm-head-quantization fp8 (engine/layers/embedding.py `ParallelLMHead.quantize_fp8`). The KV pool is
    sized from the memory free after loading, so the freed 16-bit head is handed back to the driver here."""
    check_fp8_device(device, "--lm-head-quantization fp8", "leave the flag out")
    model.lm_head.quantize_fp8(tied=model.tie_word_embeddings)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    logger.info("LM head quantized to FP8 (per output channel): %.2f GiB", model.lm_head.fp8_weight.numel() / 2**30)


@torch.no_grad()
def _fill_dummy(model: torch.nn.Module) -> None:
    """Random weights made directly on the device; small so activations stay finite. Integer (packed
    quantized) tensors get random bits; a quantized parameter may name its own range (`ShardLayout`)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
    for name, param in model.named_parameters():
        layout = getattr(param, "shard_layout", None)
        if name.endswith("norm.weight"):
            param.fill_(1.0)
        elif not param.is_floating_point():
            info = torch.iinfo(param.dtype)
            param.random_(info.min, info.max, generator=gen)
        else:
            low, high = layout.dummy_range if layout is not None and layout.dummy_range else (-0.02, 0.02)
            if param.element_size() == 1:  # float8 has no uniform_: draw in fp32, round on the copy
                param.copy_(torch.empty(param.shape, device=param.device).uniform_(low, high, generator=gen))
            else:
                param.uniform_(low, high, generator=gen)
