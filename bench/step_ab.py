"""Decode step (batch 1 unless `--batch-size`) with one kernel switch off and on, in one process (graphs recaptured).

    python bench/step_ab.py --switch pdl --quantizations fp8,bf16
    python bench/step_ab.py --switch long-split --contexts 1536 2048 3072
    python bench/step_ab.py --switch fused-rotary --batch-size 256 --contexts 768
    python bench/step_ab.py --switch fp8-cuda --quantizations fp8   # Triton (off) vs CUDA (on) FP8 GEMV
    python bench/step_ab.py --switch l2-prefetch --l2-prefetch-mb 16,24 --l2-prefetch-shapes 8x16384,32x4096

Switches:
- `pdl`: programmatic dependent launch of the batch-1 kernels (kernels/pdl.py; off by default).
- `long-split`: batch-1 decode attention's 128-token minimum split past 1024 tokens
  (kernels/decode_attention.py `LONG_SPLIT_FROM`; "off" is 64-token splits at every length).
- `fused-rotary`: the decode kernel rotates q / k and stores this step's K/V itself (`DecodeRotary`,
  engine/attention/triton_backend.py `FUSED_DECODE_ROTARY`); "off" is the separate `rotary_kv_store` launch.
- `awq-pdl`: the CUDA AWQ GEMV as a programmatic dependent launch (kernels/awq_gemv_cuda.py `PDL`, off by
  default); only with `--quantizations awq`.
- `fp8-cuda`: the FP8 layers' batch-1 GEMV, the Triton one (off) or the tensor-core CUDA kernel
  (kernels/fp8_gemv_cuda.py, on: the default where it builds); only with `--quantizations fp8`. Its logits
  differ by summation order.
- `fp8-tail`: an FP8 layer's o, gate_up and down as one persistent launch (kernels/fp8_layer_tail.py, "on") or
  three GEMV launches ("off"); only with `--quantizations fp8`. Same tiles, so the logits must be bit-identical.
- `early-kv`: batch-1 decode attention as a PDL launch that loads its KV rows while the qkv GEMV streams
  (kernels/decode_attention.py, `TESSERA_DECODE_EARLY_KV`). Its early rows are a 64-row tile where the plain
  launch uses 128, so the logits may differ in the last bits (softmax sum order).
- `o-pdl`: the batch-1 o projection (bf16 / FP8) as a PDL launch after the early-KV attention
  (kernels/pdl.py `O_AFTER_ATTENTION`, `TESSERA_PDL_O`, on by default); bit-identical.
- `gemv-chain`: the batch-1 bf16 / FP8 Triton GEMVs of each `--gemv-chain` set of projections let the next GEMV, then
  a PDL launch, start as their programs start (on), or none do (off; kernels/pdl.py `GEMV_CHAIN`, for both weight formats); one row per set;
  bit-identical.
- `awq-early-trigger`: the CUDA AWQ batch-1 GEMVs of each `--awq-early-trigger` set of projections let the next
  GEMV start as their CTAs start (on), or none do (off; kernels/awq_gemv_cuda.py `EARLY_TRIGGER`); one row per set,
  only with `--quantizations awq`. The dependents wait for the whole grid before reading x: bit-identical.
- `awq-chains`: the CUDA AWQ batch-1 GEMVs with their group loop's mma chains split as each `--awq-chains` value
  says (`TESSERA_AWQ_CUDA_CHAINS` syntax, e.g. `4,1,2e`; kernels/awq_gemv_cuda.py `CHAINS`) against one chain
  everywhere (off); one row per value, only with `--quantizations awq`. The fp32 sums change order: logits may differ in the last bits.
- `l2-prefetch`: batch-1 layers prefetch o's weights and gate_up's first rows into L2 beside attention
  (kernels/l2_prefetch.py); "off" is no prefetch, "on" each `--l2-prefetch-mb` budget with each
  `--l2-prefetch-shapes` grid (programs x bytes per prefetch instruction), one row per pair.

For each weight format one model runner is built (dummy weights, triton attention); for each context its decode
CUDA graphs are captured again with the switch off, then on, `--rounds` times in turn, and each capture's
graph-replayed step is timed by CUDA events (median of `--reps`). Alternating the captures on one runner keeps
clock drift and machine-to-machine variance out of the difference, and spares a second model load and Triton
compile per configuration. `pdl`, `awq-pdl` and `fused-rotary` must leave the logits bit-identical (they change
when or where values are computed, never how); `long-split` changes the split-KV merge order, so its logits may differ.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import itertools
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.profile_step import _batch  # noqa: E402
from bench.roofline import median_ms  # noqa: E402
from engine.args import ServerArgs  # noqa: E402
from engine.attention import triton_backend  # noqa: E402
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.forward_batch import ForwardMode  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402
from kernels import awq_gemv_cuda, fp8_layer_tail, l2_prefetch, pdl  # noqa: E402

# The module, not the function `kernels` re-exports under the same name.
decode_attention_module = importlib.import_module("kernels.decode_attention")
LONG_SPLIT_DEFAULT = decode_attention_module.LONG_SPLIT_FROM
FUSED_ROTARY_DEFAULT = triton_backend.FUSED_DECODE_ROTARY
AWQ_PDL_DEFAULT = awq_gemv_cuda.PDL
AWQ_EARLY_TRIGGER_DEFAULT = awq_gemv_cuda.EARLY_TRIGGER
AWQ_CHAINS_DEFAULT = awq_gemv_cuda.CHAINS
FP8_TAIL_DEFAULT = fp8_layer_tail.ENABLED
EARLY_KV_DEFAULT = pdl.EARLY_KV
O_PDL_DEFAULT = pdl.O_AFTER_ATTENTION
GEMV_CHAIN_DEFAULT = pdl.GEMV_CHAIN
L2_PREFETCH_DEFAULT = (l2_prefetch.BUDGET_OVERRIDE_MB, l2_prefetch.PROGRAMS, l2_prefetch.CHUNK)
# The `l2-prefetch` setting under test: (MB, programs, chunk bytes), set per row by main().
l2_prefetch_on = L2_PREFETCH_DEFAULT
# The `awq-early-trigger` projections under test, set per row by main().
early_trigger_on: frozenset[str] = frozenset()
# The `awq-chains` setting under test against one chain everywhere, set per row by main().
awq_chains_on = awq_gemv_cuda.parse_chains("1")


def _set_switch(switch: str, on: bool | None, runner: ModelRunner) -> None:
    """on=None puts the switch back to its default."""
    if switch == "fp8-cuda":  # the FP8 layers' batch-1 GEMV: Triton (off) or the CUDA kernel where it was taken
        for module in runner.model.modules():
            if hasattr(module, "fp8_cuda_gemv"):
                taken = module.__dict__.setdefault("fp8_cuda_gemv_taken", module.fp8_cuda_gemv)
                module.fp8_cuda_gemv = taken and on is not False
    elif switch == "pdl":
        pdl.set_enabled(on)
    elif switch == "early-kv":
        pdl.EARLY_KV = EARLY_KV_DEFAULT if on is None else on
    elif switch == "gemv-chain":
        pdl.GEMV_CHAIN = (GEMV_CHAIN_DEFAULT if on is None else
                          dict.fromkeys(GEMV_CHAIN_DEFAULT, early_trigger_on if on else frozenset()))
    elif switch == "o-pdl":
        pdl.O_AFTER_ATTENTION = O_PDL_DEFAULT if on is None else on
    elif switch == "fused-rotary":
        triton_backend.FUSED_DECODE_ROTARY = FUSED_ROTARY_DEFAULT if on is None else on
    elif switch == "fp8-tail":
        fp8_layer_tail.ENABLED = FP8_TAIL_DEFAULT if on is None else on
    elif switch == "awq-pdl":
        awq_gemv_cuda.PDL = AWQ_PDL_DEFAULT if on is None else on
    elif switch == "awq-early-trigger":
        awq_gemv_cuda.EARLY_TRIGGER = (AWQ_EARLY_TRIGGER_DEFAULT if on is None else early_trigger_on if on
                                       else frozenset())
    elif switch == "awq-chains":
        awq_gemv_cuda.CHAINS = AWQ_CHAINS_DEFAULT if on is None else awq_chains_on if on else awq_gemv_cuda.parse_chains("1")
    elif switch == "l2-prefetch":
        setting = L2_PREFETCH_DEFAULT if on is None else l2_prefetch_on if on else (0.0, *L2_PREFETCH_DEFAULT[1:])
        l2_prefetch.BUDGET_OVERRIDE_MB, l2_prefetch.PROGRAMS, l2_prefetch.CHUNK = setting
    else:
        decode_attention_module.LONG_SPLIT_FROM = LONG_SPLIT_DEFAULT if on in (True, None) else 1 << 30


def _measure(runner: ModelRunner, switch: str, batch_size: int, context: int, rounds: int, reps: int) -> dict:
    fb = _batch(runner, [context - 1] * batch_size, [1] * batch_size, ForwardMode.DECODE)
    times: dict[bool, list[float]] = {False: [], True: []}
    reference = None
    max_diff = 0.0
    # The same switch value across rounds: tells a nondeterministic step (any switch) from a switch that
    # changes values.
    first: dict[bool, torch.Tensor] = {}
    repeat_diff = 0.0
    for _ in range(rounds):
        for on in (False, True):
            _set_switch(switch, on, runner)
            runner.graph_runner = None  # the old graphs go before the new ones are captured
            gc.collect()
            runner.graph_runner = runner._create_graph_runner()
            logits = runner.forward(fb).clone()
            if reference is None:
                reference = logits
            max_diff = max(max_diff, (logits - reference).abs().max().item())
            first.setdefault(on, logits)
            repeat_diff = max(repeat_diff, (logits - first[on]).abs().max().item())
            times[on].append(median_ms(lambda: runner.forward(fb), reps))
    _set_switch(switch, None, runner)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {"batch_size": batch_size, "context": context, "off_ms": round(off, 4), "on_ms": round(on, 4), "delta_ms": round(on - off, 4),
            "delta_pct": round(100 * (on - off) / off, 2), "off_runs": [round(t, 4) for t in times[False]],
            "on_runs": [round(t, 4) for t in times[True]], "logits_max_diff": max_diff,
            "logits_repeat_diff": repeat_diff}


def _runner(model: str, quantization: str, batch_size: int, max_context: int) -> ModelRunner:
    extra = {} if quantization == "bf16" else {"quantization": quantization}
    args = ServerArgs(model_path=model, load_format="dummy", skip_tokenizer_init=True, attention_backend="triton",
                      cuda_graph_max_bs=batch_size, max_running_requests=batch_size,
                      max_total_tokens=max(16384, 2 * batch_size * max_context),
                      context_length=max(8192, max_context + 1), **extra)
    return ModelRunner(args, create_model_config(args, "cuda"), TPContext(), torch.device("cuda", 0))


def main() -> None:
    global l2_prefetch_on, early_trigger_on, awq_chains_on
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switch", choices=["pdl", "long-split", "fused-rotary", "awq-pdl", "fp8-cuda",
                                                 "fp8-tail", "l2-prefetch", "early-kv", "o-pdl",
                                                 "awq-early-trigger", "gemv-chain", "awq-chains"], required=True)
    parser.add_argument("--model", default="bench/models/llama-3.1-8b")
    parser.add_argument("--quantizations", default="bf16", help="comma-separated: bf16, fp8, awq")
    parser.add_argument("--contexts", type=int, nargs="+", default=[640])
    parser.add_argument("--batch-size", type=int, default=1, help="decode rows, each with a context's tokens")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--l2-prefetch-mb", default="24", help="l2-prefetch: comma-separated budgets (MB)")
    parser.add_argument("--l2-prefetch-shapes", default=f"{l2_prefetch.PROGRAMS}x{l2_prefetch.CHUNK}",
                        help="l2-prefetch: comma-separated PROGRAMSxCHUNK_BYTES grids")
    parser.add_argument("--awq-early-trigger", default="o,down",
                        help="awq-early-trigger: semicolon-separated sets of projections, e.g. 'o,down;o;down'")
    parser.add_argument("--gemv-chain", default="o,gate_up,down",
                        help="gemv-chain: semicolon-separated sets of projections, e.g. 'gate_up;down;o,gate_up,down'")
    parser.add_argument("--awq-chains", default="4,2,2e",
                        help="awq-chains: semicolon-separated TESSERA_AWQ_CUDA_CHAINS values, each against 1: '4,2,2e;2e'")
    ns = parser.parse_args()
    # One row per (l2-prefetch setting, early-trigger projections of awq-early-trigger / gemv-chain) pair; the other
    # switches have one row.
    no_l2 = (None, None, None)
    settings: list[tuple[tuple, frozenset[str]]] = [(no_l2, frozenset())]
    chains: list[str | None] = [None]
    if ns.switch == "l2-prefetch":
        try:
            shapes = [tuple(int(v) for v in shape.split("x")) for shape in ns.l2_prefetch_shapes.split(",")]
            l2_settings = [(float(mb), programs, chunk) for mb in ns.l2_prefetch_mb.split(",") for programs, chunk in shapes]
        except ValueError:
            parser.error("--l2-prefetch-mb: numbers; --l2-prefetch-shapes: PROGRAMSxCHUNK, e.g. 8x16384")
        if any(chunk % 16 or programs < 1 or mb <= 0 for mb, programs, chunk in l2_settings):
            parser.error("--l2-prefetch-shapes: chunks a multiple of 16 bytes, programs >= 1; budgets > 0")
        settings = [(l2, frozenset()) for l2 in l2_settings]
    if ns.switch in ("awq-early-trigger", "gemv-chain"):
        flag = "--" + ns.switch
        try:
            settings = [(no_l2, awq_gemv_cuda.parse_early_trigger(value, flag))
                        for value in getattr(ns, ns.switch.replace("-", "_")).split(";")]
        except ValueError as e:
            parser.error(str(e))
        if not all(projections for _, projections in settings):
            parser.error(f"{flag}: every set names at least one projection")
    if ns.switch == "awq-chains":
        try:
            chains = [value.strip() for value in ns.awq_chains.split(";")]
            for value in chains:
                awq_gemv_cuda.parse_chains(value, "--awq-chains")
        except ValueError as e:
            parser.error(str(e))
    if min(ns.contexts) < 2:
        parser.error("--contexts: at least 2 tokens each")
    if ns.batch_size < 1:
        parser.error("--batch-size: at least 1")
    if ns.switch in ("awq-pdl", "awq-early-trigger", "awq-chains") and ns.quantizations.replace(" ", "") != "awq":
        parser.error(f"--switch {ns.switch}: only with --quantizations awq")
    if ns.switch in ("fp8-cuda", "fp8-tail") and ns.quantizations.replace(" ", "") != "fp8":
        parser.error(f"--switch {ns.switch}: only with --quantizations fp8")
    if not torch.cuda.is_available():
        sys.exit("step_ab.py: needs a CUDA GPU")
    if ns.switch in ("pdl", "early-kv", "o-pdl", "gemv-chain") and (not pdl.HAS_GDC or torch.cuda.get_device_capability() < (9, 0)):
        sys.exit("step_ab.py: PDL needs an sm_90+ GPU and Triton >= 3.4")
    rows = []
    for q in ns.quantizations.split(","):
        runner = _runner(ns.model, q.strip(), ns.batch_size, max(ns.contexts))
        for context in ns.contexts:
            for (l2_prefetch_on, early_trigger_on), chain in itertools.product(settings, chains):
                awq_chains_on = awq_gemv_cuda.parse_chains(chain or "1")
                row = {"switch": ns.switch, "quantization": q.strip(),
                       **({"awq_chains": chain} if chain else {}),
                       **({"l2_prefetch": dict(zip(("mb", "programs", "chunk"), l2_prefetch_on))}
                          if l2_prefetch_on[0] else {}),
                       **({"early_trigger": sorted(early_trigger_on)} if early_trigger_on else {}),
                       **_measure(runner, ns.switch, ns.batch_size, context, ns.rounds, ns.reps)}
                print("STEP_AB " + json.dumps(row), flush=True)
                rows.append(row)
        del runner
        gc.collect()  # this runner's model, KV pool and graphs go before the next one is built
        torch.cuda.empty_cache()
    print(f"{'weights':8} {'setting':>14} {'batch':>5} {'context':>7} {'off ms':>8} {'on ms':>8} {'delta':>8} "
          f"{'max |dlogit|':>12} {'repeat':>8}")
    for r in rows:
        setting = ("{mb:g}MB {programs}x{chunk}".format(**r["l2_prefetch"]) if "l2_prefetch" in r
                   else ",".join(r["early_trigger"]) if "early_trigger" in r else r.get("awq_chains", "-"))
        print(f"{r['quantization']:8} {setting:>14} {r['batch_size']:5d} {r['context']:7d} {r['off_ms']:8.4f} "
              f"{r['on_ms']:8.4f} {r['delta_pct']:7.2f}% {r['logits_max_diff']:12.3g} {r['logits_repeat_diff']:8.3g}")
    if any(r["logits_repeat_diff"] != 0 for r in rows):
        sys.exit("step_ab.py: the step is not deterministic (logits differ between rounds of one setting)")
    if ns.switch in ("pdl", "fused-rotary", "awq-pdl", "l2-prefetch", "fp8-tail", "o-pdl",
                     "awq-early-trigger", "gemv-chain") and any(r["logits_max_diff"] != 0 for r in rows):
        sys.exit(f"step_ab.py: {ns.switch} changed the logits")


if __name__ == "__main__":
    main()
