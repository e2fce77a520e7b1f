"""argmax_rows (kernels/argmax.py) against torch.argmax: chunk edges, ragged last chunks, ties across and inside
chunks, all -inf rows, strided rows; CPU through the Triton interpreter, `-m gpu` on CUDA at the 8B's vocabulary."""

from __future__ import annotations

import pytest
import torch

from kernels.argmax import CHUNK, argmax_rows


def _cases(device: str, vocab: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(vocab)
    x = torch.randn(5, vocab, generator=gen)
    x[1] = (x[1] * 2).round()  # coarse values: many ties for the maximum
    x[2] = float("-inf")  # nothing allowed: index 0, as torch says
    x[3, :] = 1.0  # one value everywhere
    if vocab > CHUNK + 7:
        x[4, CHUNK + 7] = x[4, vocab - 1] = 50.0  # a tie across chunks: the earlier chunk wins
    return x.to(dtype).to(device)


@pytest.mark.parametrize("vocab", [1, 300, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_argmax_rows_matches_torch(vocab: int, dtype: torch.dtype) -> None:
    x = _cases("cpu", vocab, dtype)
    assert torch.equal(argmax_rows(x), x.argmax(dim=-1))
    wide = torch.zeros(5, vocab + 9, dtype=dtype)
    wide[:, 4:4 + vocab] = x  # rows that are views of a wider buffer
    assert torch.equal(argmax_rows(wide[:, 4:4 + vocab]), x.argmax(dim=-1))


def test_nan_counts_as_the_maximum() -> None:
    x = torch.zeros(1, 100)
    x[0, 60] = float("nan")
    x[0, 70] = 3.0
    assert argmax_rows(x).tolist() == [60] == x.argmax(dim=-1).tolist()


def test_no_rows() -> None:
    assert argmax_rows(torch.zeros(0, 10)).shape == (0,)


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 3, 64])
def test_argmax_rows_on_the_gpu(rows: int) -> None:
    for vocab in (128256, 151936, 32000):
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(rows, vocab, device="cuda").to(dtype)
            x[0, [17, vocab - 3]] = x[0].max() + 1  # a tie across chunks
            assert torch.equal(argmax_rows(x), x.argmax(dim=-1)), (vocab, dtype)
