"""ModelConfig: what the engine needs from a model directory's config.json, resolved once."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from engine.args import ArgsError, ServerArgs
from engine.quant.config import resolve_quant_config
from engine.weight_files import safetensors_files

logger = logging.getLogger(__name__)

_DTYPE_NAMES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
}


@dataclass(frozen=True)
class ModelConfig:
    hf_config: object
    dtype: torch.dtype
    context_len: int
    num_layers: int
    num_kv_heads: int  # whole model, before TP
    head_dim: int
    vocab_size: int
    # engine.quant QuantConfig (None: unquantized), from config.json's quantization_config and --quantization.
    quant_config: object | None = None

    def kv_heads_per_rank(self, tp_size: int) -> int:
        return self.num_kv_heads // tp_size


def load_hf_config(model_path: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    if not os.path.isfile(os.path.join(model_path, "config.json")):
        raise ArgsError(f"no config.json in model directory {model_path!r}")
    try:
        return AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many types; the operator needs one line
        raise ArgsError(f"cannot read config.json in {model_path!r}: {exc}".splitlines()[0]) from None


def resolve_dtype(args: ServerArgs, hf_config, device: str) -> torch.dtype:
    if args.dtype != "auto":
        return _DTYPE_NAMES[args.dtype]
    if device == "cpu":
        # bf16 matmuls are slow on most CPUs; the reference path is fp32.
        return torch.float32
    cfg = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    if isinstance(cfg, str):
        cfg = _DTYPE_NAMES.get(cfg, torch.bfloat16)
    if cfg in (None, torch.float32):
        return torch.bfloat16
    return cfg


def create_model_config(args: ServerArgs, device: str) -> ModelConfig:
    hf = load_hf_config(args.model_path, args.trust_remote_code)
    from engine.models.registry import resolve_model_class

    resolve_model_class(hf)  # fail early, before any weights load
    model_max = int(getattr(hf, "max_position_embeddings", 0) or 4096)
    context_len = model_max
    if args.context_length is not None:
        if args.context_length > model_max:
            logger.warning("--context-length %d exceeds the model's max_position_embeddings %d",
                           args.context_length, model_max)
        context_len = args.context_length
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    num_kv = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    if num_kv % args.tp_size or hf.num_attention_heads % args.tp_size:
        raise ArgsError(f"--tp-size {args.tp_size} must divide the model's attention heads "
                        f"({hf.num_attention_heads} q, {num_kv} kv)")
    quant_config = resolve_quant_config(hf, args.quantization, is_dummy_load=args.load_format == "dummy")
    if quant_config is not None:
        quant_config.check_model(hf, args.tp_size)
    return ModelConfig(hf_config=hf, dtype=resolve_dtype(args, hf, device), context_len=context_len,
                       num_layers=hf.num_hidden_layers, num_kv_heads=num_kv, head_dim=head_dim,
                       vocab_size=hf.vocab_size, quant_config=quant_config)


def preflight(args: ServerArgs) -> None:
    """Checks the model directory before any process starts: config readable, architecture
    supported, heads divisible by TP, quantization consistent, weight files present. Raises with one line."""
    create_model_config(args, "cpu")
    if args.speculative_mode == "draft":  # the draft loads on every rank too: same checks
        create_model_config(args.replace(model_path=args.speculative_model, speculative_model=None,
                                         speculative_algorithm=None, quantization=None), "cpu")
    if args.load_format != "dummy":
        safetensors_files(args.model_path)
