"""FP8 quantization_config parsing (engine/quant/fp8.py): which layouts resolve to what, and which
modules stay unquantized. Loading and numerics: tests/engine/test_fp8_checkpoints.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.args import ArgsError
from engine.quant.base import UnquantizedLinearMethod
from engine.quant.config import resolve_quant_config
from engine.quant.fp8 import Fp8Config, Fp8LinearMethod, Fp8QuantizeAtLoadMethod
from tests.fixtures.fp8_checkpoints import LAYOUTS


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_published_layouts_resolve(layout: str) -> None:
    quant_cfg, _, _, _, static = LAYOUTS[layout]
    cfg = resolve_quant_config(SimpleNamespace(quantization_config=quant_cfg), None)
    assert isinstance(cfg, Fp8Config) and cfg.static_activations == static
    method = cfg.linear_method(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"])
    assert type(method) is Fp8LinearMethod and method.static_activations == static
    # The flag may name the family of the checkpoint's method (compressed-tensors FP8 included).
    assert isinstance(resolve_quant_config(SimpleNamespace(quantization_config=quant_cfg), "fp8"), Fp8Config)


def test_flag_on_unquantized_checkpoint_quantizes_at_load_or_fills_dummy() -> None:
    assert type(resolve_quant_config(SimpleNamespace(), "fp8").linear_method(["x"])) is Fp8QuantizeAtLoadMethod
    dummy = resolve_quant_config(SimpleNamespace(), "fp8", is_dummy_load=True)
    assert type(dummy.linear_method(["x"])) is Fp8LinearMethod


def test_ignored_modules_stay_unquantized() -> None:
    cfg = Fp8Config.from_checkpoint({"quant_method": "compressed-tensors", "config_groups": {
        "g": {"weights": {"num_bits": 8, "type": "float", "strategy": "channel"}, "input_activations": None}},
        "ignore": ["lm_head", "re:.*layers\\.1\\.mlp\\.down_proj", "model.layers.0.self_attn.o_proj"]})
    assert not cfg.static_activations  # weight-only checkpoint: per-token activations at run time
    assert isinstance(cfg.linear_method(["model.layers.1.mlp.down_proj"]), UnquantizedLinearMethod)
    assert isinstance(cfg.linear_method(["model.layers.0.self_attn.o_proj"]), UnquantizedLinearMethod)
    assert type(cfg.linear_method(["model.layers.0.mlp.down_proj"])) is Fp8LinearMethod
    with pytest.raises(ArgsError, match="only some of the packed modules"):
        Fp8Config(source="fp8", ignore=("model.layers.0.self_attn.k_proj",)).linear_method(
            ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"])


def test_mixed_static_and_dynamic_groups_are_refused() -> None:
    w = {"num_bits": 8, "type": "float", "strategy": "tensor"}
    with pytest.raises(ArgsError, match="mix static and dynamic"):
        Fp8Config.from_checkpoint({"quant_method": "compressed-tensors", "config_groups": {
            "a": {"weights": w, "input_activations": {"num_bits": 8, "type": "float", "dynamic": True,
                                                      "strategy": "token"}},
            "b": {"weights": w, "input_activations": {"num_bits": 8, "type": "float", "dynamic": False,
                                                      "strategy": "tensor"}}}})
