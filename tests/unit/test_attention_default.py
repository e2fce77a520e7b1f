"""The default attention backend: hybrid on CUDA when flashinfer is importable (triton's batch-1 decode,
FlashInfer's prefill and long-context decode), else triton, and triton for fp32 (FlashInfer has no fp32
kernels) or a head size FlashInfer does not build; torch_native on CPU. An explicit choice always stands."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from engine.args import ArgsError, ServerArgs
from engine.attention import attention_backend_for
from engine.speculative.draft_model import draft_backend_args


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
    (True, "auto", "hybrid"),
    (True, "bfloat16", "hybrid"),
    (True, "fp16", "hybrid"),
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
    assert _backend() == "hybrid"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _backend() == "torch_native"


@pytest.mark.parametrize("present", [True, False])
@pytest.mark.parametrize("choice", ["triton", "flashinfer", "hybrid", "torch_native"])
def test_explicit_choice_stands(flashinfer_present, present: bool, choice: str) -> None:
    flashinfer_present(present)
    assert _backend(device="cuda", attention_backend=choice) == choice


@pytest.mark.parametrize("head_dim,expected", [(64, "hybrid"), (128, "hybrid"), (256, "hybrid"), (80, "triton"),
                                               (96, "triton")])
def test_default_hybrid_falls_back_for_head_sizes_flashinfer_lacks(flashinfer_present, head_dim: int,
                                                                   expected: str) -> None:
    flashinfer_present(True)
    args = ServerArgs(model_path="/no/model", load_format="dummy", device="cuda")
    assert attention_backend_for(args, head_dim) == expected


@pytest.mark.parametrize("choice", ["hybrid", "flashinfer", "triton"])
def test_explicit_choice_is_kept_for_head_sizes_flashinfer_builds(flashinfer_present, choice: str) -> None:
    flashinfer_present(True)
    args = ServerArgs(model_path="/no/model", load_format="dummy", device="cuda", attention_backend=choice)
    assert attention_backend_for(args, 128) == choice
    if choice == "triton":
        assert attention_backend_for(args, 80) == "triton"


@pytest.mark.parametrize("choice", ["hybrid", "flashinfer"])
def test_explicit_flashinfer_choice_for_a_head_size_it_lacks_is_one_line_args_error(flashinfer_present,
                                                                                     choice: str) -> None:
    flashinfer_present(True)
    args = ServerArgs(model_path="/no/model", load_format="dummy", device="cuda", attention_backend=choice)
    with pytest.raises(ArgsError) as info:
        attention_backend_for(args, 80)
    message = str(info.value)
    assert "\n" not in message
    assert f"--attention-backend {choice}" in message and "head size 80" in message and "triton" in message


@pytest.mark.parametrize("choice,head_dim,expected", [
    ("hybrid", 64, "hybrid"),        # FlashInfer builds 64: the draft follows the target
    ("hybrid", 80, "triton"),        # it does not build 80: the draft alone falls back
    ("flashinfer", 96, "triton"),
    ("triton", 80, "triton"),
    (None, 80, "triton"),            # the default hybrid falls back as for any model
    (None, 128, "hybrid"),
])
def test_draft_model_backend_follows_the_target_where_flashinfer_can_serve_it(
        flashinfer_present, choice, head_dim: int, expected: str) -> None:
    flashinfer_present(True)
    # What `for_draft_model` hands the draft: the target's args on the draft's checkpoint.
    draft = ServerArgs(model_path="/no/draft", load_format="dummy", device="cuda", attention_backend=choice)
    draft = draft_backend_args(draft, head_dim)
    assert attention_backend_for(draft, head_dim) == expected


def test_flashinfer_workspace_covers_the_largest_decode_graph() -> None:
    """Graph-mode FlashInfer sizes its split-KV scratch for the padded batch: with 512-row decode graphs it
    asked for 167,510,016 bytes of tmp_v alone (H200, 8B shape) and the fixed 128 MiB failed the start."""
    from engine.attention.flashinfer_backend import WORKSPACE_BYTES, workspace_bytes

    measured_tmp_v_at_512_rows = 167_510_016
    assert workspace_bytes(1) == workspace_bytes(256) == WORKSPACE_BYTES
    assert workspace_bytes(512) > measured_tmp_v_at_512_rows
    assert workspace_bytes(1024) >= 2 * workspace_bytes(512)
