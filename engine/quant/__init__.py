"""Weight quantization: `config.py` resolves which scheme a model uses (checkpoint `quantization_config` and
`--quantization`); `base.py` defines the per-linear method interface (and how to add a method); each scheme
lives in its own module (`awq.py`, `fp8.py`)."""

from __future__ import annotations

from engine.quant.base import LinearMethod, ShardLayout, UnquantizedLinearMethod, is_quantized
from engine.quant.config import QuantConfig, resolve_quant_config

__all__ = ["LinearMethod", "QuantConfig", "ShardLayout", "UnquantizedLinearMethod", "is_quantized",
           "resolve_quant_config"]
