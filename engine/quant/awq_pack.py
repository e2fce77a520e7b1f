"""AutoAWQ's packing, written out for tooling and tests: quantize a float weight group-wise (asymmetric
int4, AutoAWQ's `pseudo_quantize_tensor` without the activation-aware scale search) and pack it the way
`WQLinear_GEMM.from_linear` does. Deliberately a loop over AutoAWQ's pack order rather than the inverse
of `engine.quant.awq.unpack_int4`, so a test of one against the other can fail.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from engine.quant.awq import AWQ_PACK_ORDER, PACK


class AWQPacked(NamedTuple):
    qweight: torch.Tensor  # int32 [in, out/8]
    qzeros: torch.Tensor  # int32 [in/G, out/8]
    scales: torch.Tensor  # fp16 [in/G, out]
    dequantized: torch.Tensor  # fp32 [out, in]: (q - z) * scales, what the packed tensors mean


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """[R, C] ints in 0..15 -> [R, C/8] int32; nibble i of pack j holds column 8j + AWQ_PACK_ORDER[i]."""
    rows, cols = values.shape
    v = values.to(torch.int64).reshape(rows, cols // PACK, PACK)  # [R, packs, column within the pack]
    packed = torch.zeros(rows, cols // PACK, dtype=torch.int64)  # unsigned 32-bit values, wrapped below
    for i, col in enumerate(AWQ_PACK_ORDER):
        packed |= v[:, :, col] << (4 * i)
    return torch.where(packed >= 1 << 31, packed - (1 << 32), packed).to(torch.int32)


def quantize_awq(weight: torch.Tensor, group_size: int) -> AWQPacked:
    """weight [out, in] (HF layout) -> AWQ GEMM tensors; scales are rounded to fp16 as checkpoints store them."""
    out_features, in_features = weight.shape
    assert in_features % group_size == 0 and out_features % PACK == 0, (weight.shape, group_size)
    w = weight.detach().float().t().reshape(in_features // group_size, group_size, out_features)  # [groups, G, out]
    w_min, w_max = w.amin(dim=1), w.amax(dim=1)  # [groups, out]
    scales = ((w_max - w_min).clamp(min=1e-5) / 15).half()
    s = scales.float()
    zeros = (-torch.round(w_min / s)).clamp(0, 15)
    q = (torch.round(w / s[:, None, :]) + zeros[:, None, :]).clamp(0, 15)  # [groups, G, out]
    dequantized = ((q - zeros[:, None, :]) * s[:, None, :]).reshape(in_features, out_features).t().contiguous()
    return AWQPacked(qweight=pack_int4(q.reshape(in_features, out_features)),
                     qzeros=pack_int4(zeros), scales=scales, dequantized=dequantized)
