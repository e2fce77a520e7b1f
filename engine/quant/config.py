"""Which quantization a model runs with: resolved once from config.json's `quantization_config` and the
`--quantization` flag, before any process starts (so a mismatch is one ArgsError line, not a traceback).

Rules:
- no flag, no `quantization_config`: unquantized (returns None);
- no flag, `quant_method` m in the checkpoint: m's config, parsed from the checkpoint;
- flag f, checkpoint method m: f must name m's family, else ArgsError;
- flag f, no `quantization_config`: `QuantConfig.from_flag` of f decides (fp8 quantizes bf16 weights at load;
  awq only allows it with `--load-format dummy`, which fills AWQ-shaped random weights for benchmarks).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

from engine.args import ArgsError

# --quantization values; each names a family that owns one or more checkpoint `quant_method`s.
QUANT_FAMILIES = {
    "awq": "engine.quant.awq:AWQConfig",
    "fp8": "engine.quant.fp8:Fp8Config",  # written on branch quant-fp8
}
# checkpoint `quant_method` -> family. compressed-tensors is claimed by fp8: its parser must reject the
# schemes it does not implement (int4/int8 compressed-tensors) with a clear error.
CHECKPOINT_METHODS = {"awq": "awq", "fp8": "fp8", "compressed-tensors": "fp8"}


class QuantConfig(ABC):
    """A quantization scheme for a whole model: knows its checkpoint parameters and picks, per linear
    layer, the `LinearMethod` (engine/quant/base.py) that creates, loads and applies its weights."""

    name: str  # the --quantization family, e.g. "awq"

    @classmethod
    @abstractmethod
    def from_checkpoint(cls, quant_cfg: dict) -> QuantConfig:
        """Parses config.json's `quantization_config`; raises ArgsError (one line) on what it cannot run."""

    @classmethod
    def from_flag(cls, is_dummy_load: bool) -> QuantConfig:
        """`--quantization NAME` on a checkpoint without `quantization_config`. Default: refused."""
        raise ArgsError(f"--quantization {cls.name} needs a checkpoint quantized with {cls.name} (config.json "
                        f"quantization_config); this model has none")

    def check_model(self, hf_config, tp_size: int) -> None:
        """Shape checks against the model and TP size (e.g. AWQ groups per rank); raises ArgsError."""

    @abstractmethod
    def linear_method(self, checkpoint_names: list[str]):
        """The LinearMethod for a linear layer holding these checkpoint modules (several for a packed
        layer, e.g. `model.layers.0.self_attn.q_proj`, `.k_proj`, `.v_proj`)."""


def _family_class(family: str) -> type[QuantConfig]:
    module_name, cls_name = QUANT_FAMILIES[family].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ArgsError(f"quantization {family!r} is not implemented in this build") from None
    return getattr(module, cls_name)


def resolve_quant_config(hf_config, flag: str | None, is_dummy_load: bool = False) -> QuantConfig | None:
    """The model's QuantConfig (None: unquantized); raises ArgsError with one line."""
    quant_cfg = getattr(hf_config, "quantization_config", None)
    if quant_cfg is not None and not isinstance(quant_cfg, dict):
        quant_cfg = quant_cfg.to_dict()  # a transformers QuantizationConfigMixin
    if flag is not None and flag not in QUANT_FAMILIES:
        raise ArgsError(f"--quantization must be one of {', '.join(QUANT_FAMILIES)}, got {flag!r}")
    if not quant_cfg:
        return _family_class(flag).from_flag(is_dummy_load) if flag else None
    method = str(quant_cfg.get("quant_method", "")).lower()
    family = CHECKPOINT_METHODS.get(method)
    if family is None:
        raise ArgsError(f"unsupported quant_method {method!r} in config.json quantization_config; "
                        f"supported: {', '.join(CHECKPOINT_METHODS)}")
    if flag is not None and flag != family:
        raise ArgsError(f"--quantization {flag} does not match the checkpoint, which is quantized with "
                        f"quant_method {method!r}")
    return _family_class(family).from_checkpoint(quant_cfg)
