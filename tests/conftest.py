"""Shared fixtures: tiny random HF models built once per session (see tests/fixtures/tiny_models.py)."""

from __future__ import annotations

import os

import pytest
import torch

# Triton picks interpreter vs compiler when a module decorates its kernels. `kernels/` sets the
# interpreter default itself, but a test that imports triton first (SGLang's own modules do) would
# freeze compiled mode for the whole session on a machine without CUDA.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tests.fixtures.tiny_models import cached_tiny_model


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_root) -> str:
    return cached_tiny_model(tiny_model_root, "llama")


@pytest.fixture(scope="session")
def tiny_model_factory(tiny_model_root):
    """tiny_model_factory("qwen3") -> path of that architecture's tiny model."""
    return lambda arch: cached_tiny_model(tiny_model_root, arch)


@pytest.fixture(autouse=True)
def _seeded_torch_rng():
    """Every test starts from the same global torch seed, so a test that draws unseeded random tensors
    gets the same draw whatever ran before it on its xdist worker (an unseeded draw failed CI once:
    tests/kernels/test_fp8.py, 2026-12-03). Tests that need their own streams seed generators."""
    torch.manual_seed(0)
