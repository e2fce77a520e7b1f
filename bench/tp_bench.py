"""Tensor parallelism on several GPUs of one host (issue 4 item 4), one call:

1. TP=2 gives the same greedy tokens as TP=1 on a tiny fp32 model that fits one GPU;
2. single-stream decode of the Llama-3.1-70B shape at TP=2 (dummy bf16 weights) against the
   two-GPU roofline: each GPU streams its half of the weights per step, at the copy bandwidth
   measured on GPU 0 in the same run.

    python3 bench/tp_bench.py --tp 2            # on nvidia-h200-x2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def check_tp_equivalence(tp: int) -> dict:
    from engine import Engine
    from tests.engine.test_hf_equivalence import make_prompts
    from tests.fixtures.tiny_models import build_tiny_model

    path = build_tiny_model(os.path.join(tempfile.mkdtemp(), "llama"), "llama")
    prompts = make_prompts(384)
    params = {"max_new_tokens": 32, "temperature": 0, "ignore_eos": True}
    outs = {}
    for size in (1, tp):
        with Engine(model_path=path, tp_size=size, dtype="float32", attention_backend="triton") as engine:
            outs[size] = [o["output_ids"] for o in engine.generate(input_ids=prompts, sampling_params=params)]
    same = sum(a == b for a, b in zip(outs[1], outs[tp]))
    return {"prompts": len(prompts), "identical": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--model", default=os.path.join(ROOT, "bench", "models", "llama-3.1-70b"))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--skip-equivalence", action="store_true")
    parser.add_argument("--attention-backend", default=None,
                        help="default: the engine's (flashinfer when installed, else triton)")
    ns = parser.parse_args()

    import torch

    from bench.roofline import measure
    from bench.single_stream import run_single_stream
    from engine import Engine
    from engine.args import ServerArgs

    if not ns.skip_equivalence:
        print("tp equivalence:", json.dumps(check_tp_equivalence(ns.tp)), flush=True)
    ceilings = measure(ns.model)
    # Each rank streams 1/tp of the weights (and KV) per step, all ranks at once.
    roofline = ceilings.decode_tok_s * ns.tp
    vocab = json.load(open(os.path.join(ns.model, "config.json")))["vocab_size"]
    graphs = {"cuda_graph_max_bs": 8}
    if ns.attention_backend:
        graphs["attention_backend"] = ns.attention_backend
    try:
        with Engine(model_path=ns.model, load_format="dummy", skip_tokenizer_init=True, tp_size=ns.tp,
                    **graphs) as engine:
            result = run_single_stream(engine, vocab, 512, ns.output_len, ns.runs)
    except Exception as exc:  # report and measure eager instead, so the call still yields a number
        print(f"with CUDA graphs failed: {exc}; retrying with --disable-cuda-graph", flush=True)
        graphs = {"disable_cuda_graph": True, **({"attention_backend": ns.attention_backend}
                                                  if ns.attention_backend else {})}
        with Engine(model_path=ns.model, load_format="dummy", skip_tokenizer_init=True, tp_size=ns.tp,
                    **graphs) as engine:
            result = run_single_stream(engine, vocab, 512, ns.output_len, ns.runs)
    result["engine_args"] = graphs
    result["attention_backend"] = ServerArgs(model_path=ns.model, **graphs).resolved_attention_backend
    frac = result["decode_tok_s"] / roofline
    print("tp single stream:", json.dumps({"device": torch.cuda.get_device_name(), "tp": ns.tp,
                                           "copy_tbs_gpu0": round(ceilings.copy_tbs, 2),
                                           "roofline_tok_s": round(roofline, 1), **result,
                                           "fraction_of_roofline": round(frac, 3)}), flush=True)


if __name__ == "__main__":
    main()
