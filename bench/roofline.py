"""Device ceilings measured in the same run as the benchmarks, and the rooflines they imply.

    python bench/roofline.py --model bench/models/llama-3.1-8b

Copy bandwidth: a 2 GiB device-to-device copy, counting bytes read + written. Matmul: bf16 8192^3 on
random data (zeros run faster and would flatter the ceiling). Both are medians of event-timed reps.

Decode roofline at batch 1: every step reads all weights except the embedding table (one row of
it) plus the sequence's KV cache, so tok/s <= bandwidth / (weight bytes + KV bytes). DESIGN's issue
quotes the coarser all-parameters figure (16.06 GB for Llama-3.1-8B); both are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class ModelShape:
    num_params: int
    embed_params: int
    kv_bytes_per_token: int  # all layers, K and V, bf16

    @property
    def bytes_all(self) -> int:
        return 2 * self.num_params

    @property
    def bytes_per_decode_step(self) -> int:
        return 2 * (self.num_params - self.embed_params)


def model_shape(model_dir: str) -> ModelShape:
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(model_dir)
    h, n_layers, n_heads, n_kv = c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads
    head_dim = getattr(c, "head_dim", None) or h // n_heads
    attn = h * head_dim * (n_heads + 2 * n_kv) + n_heads * head_dim * h
    mlp = 3 * h * c.intermediate_size
    embed = c.vocab_size * h
    lm_head = 0 if getattr(c, "tie_word_embeddings", False) else c.vocab_size * h
    params = embed + lm_head + n_layers * (attn + mlp + 2 * h) + h
    return ModelShape(params, embed, 2 * n_layers * n_kv * head_dim * 2)


def median_ms(fn, reps: int) -> float:
    """Median GPU time of `fn` over `reps` calls after one warm-up, by CUDA events."""
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth_tbs(nbytes: int = 2 << 30) -> float:
    import torch

    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), 20)
    return 2 * nbytes / (ms * 1e-3) / 1e12


def matmul_tflops(n: int = 8192) -> float:
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = median_ms(lambda: a @ b, 20)
    return 2 * n**3 / (ms * 1e-3) / 1e12


@dataclass
class Roofline:
    device: str
    copy_tbs: float
    matmul_tflops: float
    decode_tok_s: float  # batch 1, weights read per step (no embedding table) + KV of the context
    decode_tok_s_all_params: float  # the coarser figure: all parameters per step
    weights_gb: float


def measure(model_dir: str, context_len: int = 640) -> Roofline:
    """`context_len`: mean KV length over a 512-in / 256-out stream."""
    import torch

    shape = model_shape(model_dir)
    bw = copy_bandwidth_tbs()
    flops = matmul_tflops()
    torch.cuda.empty_cache()  # hand the buffers back before an engine sizes its KV cache
    step_bytes = shape.bytes_per_decode_step + context_len * shape.kv_bytes_per_token
    return Roofline(device=torch.cuda.get_device_name(), copy_tbs=bw, matmul_tflops=flops,
                    decode_tok_s=bw * 1e12 / step_bytes, decode_tok_s_all_params=bw * 1e12 / shape.bytes_all,
                    weights_gb=shape.bytes_all / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    ns = parser.parse_args()
    print(json.dumps(asdict(measure(ns.model))))


if __name__ == "__main__":
    main()
