"""The default attention backend: triton on CUDA (the faster batch-1 decode; hybrid and flashinfer are
opt-in whether or not flashinfer is importable); torch_native on CPU. An explicit choice always stands."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from engine.args import ServerArgs


@pytest.fixture
def flashinfer_present(monkeypatch):
    """flashinfer_present(True / False) makes `find_spec("flashinfer")` find it or not."""
    real = importlib.util.find_spec

    def set_present(present: bool) -> None:
        def find_spec(name, *args, **kwargs):
            if name == "flashinfer":
                return object() if present else None
            return real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return set_present


def _backend(**kwargs) -> str:
    return ServerArgs(model_path="/no/model", load_format="dummy", **kwargs).resolved_attention_backend


@pytest.mark.parametrize("present,dtype,expected", [
    (True, "auto", "triton"),
    (True, "bfloat16", "triton"),
    (True, "fp16", "triton"),
    (True, "float32", "triton"),
    (False, "auto", "triton"),
    (False, "bfloat16", "triton"),
])
def test_cuda_default(flashinfer_present, present: bool, dtype: str, expected: str) -> None:
    flashinfer_present(present)
    assert _backend(device="cuda", dtype=dtype) == expected


@pytest.mark.parametrize("present", [True, False])
def test_cpu_default_is_torch_native(flashinfer_present, present: bool) -> None:
    flashinfer_present(present)
    assert _backend(device="cpu") == "torch_native"


def test_auto_device_follows_cuda_availability(flashinfer_present, monkeypatch) -> None:
    flashinfer_present(True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _backend() == "triton"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _backend() == "torch_native"


@pytest.mark.parametrize("present", [True, False])
@pytest.mark.parametrize("choice", ["triton", "flashinfer", "hybrid", "torch_native"])
def test_explicit_choice_stands(flashinfer_present, present: bool, choice: str) -> None:
    flashinfer_present(present)
    assert _backend(device="cuda", attention_backend=choice) == choice
