"""The whole benchmark suite in one call (< 8 minutes on one H100/H200), one table at the end.

    python bench/run_suite.py                    # Llama-3.1-8B shape, dummy weights, all workloads
    python bench/run_suite.py --quick            # full single-stream + offline, the rest scaled down

Order: device ceilings (copy bandwidth, bf16 matmul) -> one engine for single-stream latency,
offline throughput, online serving (in-process, Poisson arrivals) and shared prefix with the radix
cache -> a second engine with `--disable-radix-cache` for the same shared-prefix run -> the HF
transformers baseline on a subset of the offline workload (a subprocess with a time limit).
Results go to stdout and, as JSON, to `$OUT/suite.json` (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.long_context import format_rows, run_long_context  # noqa: E402
from bench.roofline import measure  # noqa: E402
from bench.serving import run_engine_online  # noqa: E402
from bench.shared_prefix import run_shared_prefix  # noqa: E402
from bench.single_stream import run_single_stream  # noqa: E402
from bench.workloads import offline_prompts, shared_prefix_prompts  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; DESIGN.md's by default, smaller for --quick (device smoke test) and --dry-run (CPU)."""
    single_in: int = 512
    single_out: int = 256
    single_runs: int = 3
    offline_num: int = 256
    offline_in: tuple[int, int] = (256, 1024)
    out_len: int = 256
    online_num: int = 100
    groups: int = 16
    per_group: int = 32
    prefix_len: int = 2048
    question_len: int = 128
    hf_num: int = 64
    hf_out: int = 256
    radix_off: bool = True
    long_lens: tuple[int, ...] = (8192, 32768, 100_000)  # --long-context
    long_out: int = 128


QUICK = Sizes(single_runs=2, online_num=20, groups=4, per_group=8, hf_num=4, hf_out=32, radix_off=False)
DRY_RUN = Sizes(single_in=64, single_out=16, single_runs=1, offline_num=16, offline_in=(16, 64), out_len=16,
                online_num=8, groups=2, per_group=4, prefix_len=64, question_len=8, hf_num=2, hf_out=8,
                long_lens=(64, 128), long_out=8)


def run_offline(engine, prompts: list[list[int]], output_len: int) -> dict:
    params = {"max_new_tokens": output_len, "temperature": 0, "ignore_eos": True}
    engine.generate(input_ids=prompts[:2], sampling_params={**params, "max_new_tokens": 4})  # warm-up
    engine.flush_cache()
    before = engine.get_server_info()
    t0 = time.perf_counter()
    outs = engine.generate(input_ids=prompts, sampling_params=params)
    elapsed = time.perf_counter() - t0
    after = engine.get_server_info()
    out_tokens = sum(len(o["output_ids"]) for o in outs)
    return {"elapsed_s": round(elapsed, 2), "output_tok_s": round(out_tokens / elapsed, 1),
            "input_tokens": sum(len(p) for p in prompts), "output_tokens": out_tokens,
            "retractions": after["num_retractions"] - before["num_retractions"],
            "overlapped_steps": after.get("num_overlapped_steps", 0) - before.get("num_overlapped_steps", 0)}


def run_hf(model: str, size: Sizes, timeout_s: float) -> dict:
    cmd = [sys.executable, os.path.join(ROOT, "bench", "hf_baseline.py"), "--model", model,
           "--num-prompts", str(size.hf_num), "--output-len", str(size.hf_out),
           "--min-input", str(size.offline_in[0]), "--max-input", str(size.offline_in[1])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f}s"}
    for line in proc.stdout.splitlines():
        if line.startswith("HF_BASELINE "):
            return json.loads(line.removeprefix("HF_BASELINE "))
    return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}


def _fmt(v) -> str:
    return f"{v:,.1f}" if isinstance(v, float) else str(v)


def print_table(res: dict) -> None:
    roof = res["roofline"]
    rows = [
        ("device", roof["device"], "", ""),
        ("copy bandwidth (TB/s, read+write)", roof["copy_tbs"], "", "H100 ~3.0, H200 ~4.3"),
        ("bf16 matmul 8192^3 (TFLOP/s)", roof["matmul_tflops"], "", "~790"),
        ("decode roofline bs=1 (tok/s)", roof["decode_tok_s"],
         "", f"all-params figure {roof['decode_tok_s_all_params']:.1f}"),
        ("engine start incl. graph capture (s)", res.get("engine_start_s", ""), "", ""),
    ]
    if "single_stream" in res:
        s = res["single_stream"]
        rows += [("single stream 512/256: decode tok/s", s["decode_tok_s"], ">= 170 (H100)",
                  f"{100 * s['decode_tok_s'] / roof['decode_tok_s']:.0f}% of roofline"),
                 ("single stream: TTFT (ms)", s["ttft_ms"], "", "")]
        targets = {"awq": ">= 2.5x bf16", "fp8": ">= 1.8x bf16"}
        for key in sorted(k for k in res if k.startswith("single_stream_")):
            scheme, q = key.removeprefix("single_stream_"), res[key]
            rows += [(f"single stream {scheme}: decode tok/s", q["decode_tok_s"], targets.get(scheme, ""),
                      f"{q['decode_tok_s'] / s['decode_tok_s']:.2f}x bf16"),
                     (f"single stream {scheme}: TTFT (ms)", q["ttft_ms"], "", "")]
    if "offline" in res:
        o = res["offline"]
        hf = res.get("hf_baseline", {})
        ref = (f"HF {hf['output_tok_s']:.0f} tok/s ({hf['method']}, {hf['num_prompts']} req)"
               if "output_tok_s" in hf else f"HF: {hf.get('error', 'not run')}")
        rows.append((f"offline {res['offline_num']} req: output tok/s", o["output_tok_s"], ">= 7000 (H100)", ref))
    if "online" in res:
        on = res["online"]
        rows += [(f"online {on['request_rate']} req/s: TTFT median / p99 (ms)",
                  f"{on['ttft']['median_ms']} / {on['ttft']['p99_ms']}", "median < 60", ""),
                 ("online: ITL median / p99 (ms)", f"{on['itl']['median_ms']} / {on['itl']['p99_ms']}",
                  "median < 8", ""),
                 ("online: E2E median / p99 (ms)", f"{on['e2e']['median_ms']} / {on['e2e']['p99_ms']}", "", ""),
                 ("online: output tok/s", on["output_tok_s"], "", f"{on['completed']} done, {on['failed']} failed")]
    if "shared_prefix" in res:
        sp = res["shared_prefix"]
        rows += [("shared prefix radix on: output tok/s", sp["radix_on"]["output_tok_s"], "", ""),
                 ("shared prefix radix off: output tok/s", sp.get("radix_off", {}).get("output_tok_s", ""), "", "")]
        if "speedup" in sp:
            rows.append(("shared prefix speedup on/off", sp["speedup"], ">= 2.5", ""))
        rows.append(("shared prefix cache hit rate", sp["radix_on"]["cache_hit_rate"], ">= 0.90",
                     "max 0.912 cold (first request of each group misses)"))
    if "long_context" in res:
        lc = res["long_context"]
        rows.append(("long context backend", lc["attention_backend"], "", "default backend, one request"))
        rows += format_rows(lc["rows"])
    rows.append(("suite wall time (s)", res.get("suite_s", ""), "< 480", ""))
    width = max(len(r[0]) for r in rows)
    print("\n" + "=" * 110)
    print(f"{'metric'.ljust(width)} | {'measured':>16} | {'target':>14} | reference")
    print("-" * 110)
    for name, value, target, ref in rows:
        print(f"{name.ljust(width)} | {_fmt(value):>16} | {target:>14} | {ref}")
    print("=" * 110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(ROOT, "bench", "models", "llama-3.1-8b"))
    parser.add_argument("--quick", action="store_true", help="full single-stream + offline, the rest scaled down")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, CPU allowed: checks the plumbing")
    parser.add_argument("--attention-backend", default="triton", help="triton (the engine's own kernels, rotary fused into the KV store); flashinfer also runs in CUDA graphs")
    # SGLang captures up to batch 256 on >= 80 GB GPUs at TP < 4; the offline workload decodes at 256.
    parser.add_argument("--engine-args", default='{"cuda_graph_max_bs": 256}',
                        help="JSON of extra ServerArgs fields for both engines")
    parser.add_argument("--online-rate", type=float, default=4.0)
    parser.add_argument("--hf-timeout", type=float, default=150.0)
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--quantizations", default="",
                        help="comma-separated weight quantizations (awq, fp8) to run single-stream with, after bf16")
    parser.add_argument("--long-context", action="store_true",
                        help="also 8k / 32k / 100k single-request rows on the default backend (one more engine, "
                             "~2 min; device_session.sh runs them as their own stage, long-context)")
    parser.add_argument("--out", default=os.environ.get("OUT", os.path.join(ROOT, "bench", "out")))
    ns = parser.parse_args()

    import torch

    from engine import Engine
    from engine.model_config import load_hf_config

    size = DRY_RUN if ns.dry_run else QUICK if ns.quick else Sizes()
    t_suite = time.perf_counter()
    res: dict = {"model": os.path.basename(ns.model.rstrip("/")), "quick": ns.quick, "sizes": asdict(size)}
    if torch.cuda.is_available():
        res["roofline"] = asdict(measure(ns.model))
    else:  # dry run on a CPU: no ceilings to measure
        res["roofline"] = {"device": "cpu", "copy_tbs": 0.0, "matmul_tflops": 0.0, "decode_tok_s": float("nan"),
                           "decode_tok_s_all_params": float("nan"), "weights_gb": 0.0}
    print("roofline:", json.dumps(res["roofline"]), flush=True)
    vocab = load_hf_config(ns.model).vocab_size
    kwargs = {"model_path": ns.model, "load_format": "dummy", "skip_tokenizer_init": True,
              "attention_backend": ns.attention_backend, **json.loads(ns.engine_args)}
    shared = shared_prefix_prompts(size.groups, size.per_group, size.prefix_len, size.question_len, vocab)
    online_prompts = offline_prompts(size.online_num, *size.offline_in, vocab, seed=1)

    t0 = time.perf_counter()
    with Engine(**kwargs) as engine:
        res["engine_start_s"] = round(time.perf_counter() - t0, 1)
        res["server_info"] = {k: v for k, v in engine.get_server_info().items()
                              if k in ("max_total_tokens", "max_running_requests", "attention_backend", "dtype")}
        print("engine:", json.dumps(res["server_info"]), f"start {res['engine_start_s']}s", flush=True)
        res["single_stream"] = run_single_stream(engine, vocab, size.single_in, size.single_out, size.single_runs)
        print("single stream:", json.dumps(res["single_stream"]), flush=True)
        res["offline_num"] = size.offline_num
        res["offline"] = run_offline(engine, offline_prompts(size.offline_num, *size.offline_in, vocab), size.out_len)
        print("offline:", json.dumps(res["offline"]), flush=True)
        res["online"] = run_engine_online(engine, online_prompts, ns.online_rate, size.out_len)
        print("online:", json.dumps(res["online"]), flush=True)
        res["shared_prefix"] = {"radix_on": run_shared_prefix(engine, shared, size.out_len)}
        print("shared prefix radix on:", json.dumps(res["shared_prefix"]["radix_on"]), flush=True)
    if size.radix_off:
        with Engine(**kwargs, disable_radix_cache=True) as engine:
            res["shared_prefix"]["radix_off"] = run_shared_prefix(engine, shared, size.out_len)
        sp = res["shared_prefix"]
        sp["speedup"] = round(sp["radix_off"]["elapsed_s"] / sp["radix_on"]["elapsed_s"], 2)
        print("shared prefix radix off:", json.dumps(sp["radix_off"]), flush=True)
    for scheme in filter(None, ns.quantizations.split(",")):
        # Same workload, dummy weights in that format: the decode speed-up over bf16 is the figure that matters.
        with Engine(**{**kwargs, "quantization": scheme}) as engine:
            res[f"single_stream_{scheme}"] = run_single_stream(engine, vocab, size.single_in, size.single_out,
                                                               size.single_runs)
        print(f"single stream {scheme}:", json.dumps(res[f"single_stream_{scheme}"]), flush=True)
    if ns.long_context:
        # The default backend (not --attention-backend): the long-context rows measure what users get.
        lc_kwargs = {k: v for k, v in kwargs.items() if k != "attention_backend"}
        lc_kwargs["context_length"] = max(size.long_lens) + size.long_out + 8
        copy_tbs = res["roofline"]["copy_tbs"] or None  # 0.0 on a CPU dry run: no roofline
        with Engine(**lc_kwargs) as engine:
            res["long_context"] = {"attention_backend": engine.get_server_info().get("attention_backend"),
                                   "rows": run_long_context(engine, ns.model, vocab, copy_tbs, size.long_lens,
                                                            size.long_out)}
    if not ns.skip_hf:
        res["hf_baseline"] = run_hf(ns.model, size, ns.hf_timeout)
        print("hf baseline:", json.dumps(res["hf_baseline"]), flush=True)
    res["suite_s"] = round(time.perf_counter() - t_suite, 1)
    os.makedirs(ns.out, exist_ok=True)
    with open(os.path.join(ns.out, "suite.json"), "w") as f:
        json.dump(res, f, indent=1)
    print_table(res)


if __name__ == "__main__":
    main()
