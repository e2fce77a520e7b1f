"""Batch-1 decode of an FP8 checkpoint through the fused path (`_row_gemv` -> `kernels.fp8_gemv` with the
RMSNorm / SiLU prologues and residual epilogues) vs the layer-by-layer FP8 path (dequantized weights
on the CPU), on the Triton interpreter. Same checks as tests/engine/test_fused_decode.py (whose loop
this reuses): logits to fp32 rounding, same K/V written, same greedy token step after step."""

from __future__ import annotations

import pytest

from tests.engine.test_fused_decode import (
    test_fused_single_row_decode_matches_layer_path as check_fused_decode,
)
from tests.fixtures.fp8_checkpoints import write_fp8_checkpoint


@pytest.mark.parametrize("layout", ["fp8-tensor", "ct-channel"])
def test_fp8_fused_single_row_decode_matches_layer_path(tiny_model_factory, tmp_path, layout: str) -> None:
    fp8_dir, _ = write_fp8_checkpoint(tiny_model_factory("qwen2"), str(tmp_path / layout), layout)
    check_fused_decode(lambda arch: fp8_dir, "qwen2")
