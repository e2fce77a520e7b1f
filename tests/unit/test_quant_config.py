"""Quantization config resolution (engine/quant/config.py): checkpoint `quantization_config` vs
`--quantization`, with one-line ArgsErrors for what cannot run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.args import ArgsError, ServerArgs
from engine.quant.config import resolve_quant_config


def _hf(quant_cfg: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(quantization_config=quant_cfg) if quant_cfg is not None else SimpleNamespace()


def test_unquantized_without_flag() -> None:
    assert resolve_quant_config(_hf(), None) is None


def test_unknown_quant_method_is_one_line() -> None:
    with pytest.raises(ArgsError, match="unsupported quant_method 'gptq'") as err:
        resolve_quant_config(_hf({"quant_method": "gptq", "bits": 4}), None)
    assert "\n" not in str(err.value)


def test_flag_must_match_checkpoint() -> None:
    with pytest.raises(ArgsError, match="--quantization fp8 does not match the checkpoint.*'awq'"):
        resolve_quant_config(_hf({"quant_method": "awq", "bits": 4, "group_size": 128}), "fp8")


def test_flag_value_is_validated_by_server_args() -> None:
    with pytest.raises(ArgsError, match="--quantization must be one of awq, fp8, got 'int3'"):
        ServerArgs(device="cpu", load_format="dummy", quantization="int3")
