"""KV-cache dtype accuracy: logits and greedy output of fp8 / bf16 KV against a reference KV dtype.

    # CPU, bundled demo model (fp32 weights on CPU; reference KV fp32):
    python bench/kv_accuracy.py --model-path models/demo --device cpu
    # GPU, Llama-3.1-8B shape with dummy weights, bf16 reference, both GPU backends:
    python bench/kv_accuracy.py --model-path bench/models/llama-3.1-8b --load-format dummy --device cuda \
        --kv-dtypes bf16,fp8_e4m3 --attention-backend triton
    python bench/kv_accuracy.py ... --attention-backend flashinfer

One ModelRunner per KV dtype, same weights (dummy weights are seeded, so identical), same prompts.
Two measurements:
  - teacher-forced: prefill the prompts, then decode `--steps` tokens feeding every runner the
    reference's greedy token, so each step's logits come from the same context. Reported: max and
    relative RMS logit error (RMS of the difference over the RMS of the reference's centred logits),
    mean KL(reference || other) and top-1 agreement.
  - free-running greedy: each runner decodes its own argmax; reported as the mean fraction of each
    output that matches the reference before the first difference ("prefix agreement") and the
    fraction of positions that match.
Decode reads every earlier token's K/V from the pool, so both measurements see the fp8 rounding on
every backend (the triton extend kernel reads a prompt's own new tokens unquantized). With dummy
weights, logits are nearly flat, so greedy agreement says little there: read the logit errors.
On CUDA the decode steps replay CUDA graphs (as serving does) unless --disable-cuda-graph.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from dataclasses import asdict, dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.args import ServerArgs  # noqa: E402
from engine.batch_builder import ScheduleBatch, build_forward_batch  # noqa: E402
from engine.distributed.parallel_state import TPContext  # noqa: E402
from engine.forward_batch import ForwardMode  # noqa: E402
from engine.kv_manager import KVManager  # noqa: E402
from engine.model_config import create_model_config  # noqa: E402
from engine.model_runner import ModelRunner  # noqa: E402
from engine.req import Req  # noqa: E402
from engine.sampling_params import SamplingParams  # noqa: E402


@dataclass(frozen=True)
class KVAccuracy:
    kv_cache_dtype: str
    reference: str
    max_abs_logit_err: float
    rel_rms_logit_err: float
    mean_kl: float
    top1_agreement: float  # teacher-forced
    greedy_prefix_agreement: float  # free-running
    greedy_token_match: float


def build_runner(model_path: str, kv_cache_dtype: str, device: torch.device, *, load_format: str = "auto",
                 attention_backend: str | None = None, dtype: str = "auto", max_total_tokens: int = 32768,
                 disable_cuda_graph: bool = False, max_running_requests: int = 64, **server_args) -> ModelRunner:
    args = ServerArgs(model_path=model_path, load_format=load_format, kv_cache_dtype=kv_cache_dtype,
                      attention_backend=attention_backend, dtype=dtype, device=device.type,
                      max_total_tokens=max_total_tokens, max_running_requests=max_running_requests,
                      disable_cuda_graph=disable_cuda_graph, cuda_graph_max_bs=max_running_requests, random_seed=0,
                      **server_args)
    return ModelRunner(args, create_model_config(args, device.type), TPContext(), device)


class Session:
    """Requests living in one runner's KV pool, stepped one batch at a time."""

    def __init__(self, runner: ModelRunner, prompts: list[list[int]]) -> None:
        self.runner = runner
        self.kv = KVManager(runner.kv_pool, runner.req_pool, disable_radix_cache=True)
        self.reqs = [Req(rid=f"r{i}", origin_input_ids=list(p), sampling=SamplingParams(temperature=0))
                     for i, p in enumerate(prompts)]

    def prefill(self) -> torch.Tensor:  # [B, vocab] fp32 logits of each prompt's last position
        for req in self.reqs:
            assert self.kv.admit(req) and self.kv.extend(req, req.fill_len) is not None, "KV pool too small"
            req.extend_len = req.fill_len
        batch = ScheduleBatch(ForwardMode.EXTEND, self.reqs)
        return self.runner.forward(build_forward_batch(batch, self.kv.req_pool, self.runner.device)).float()

    def decode(self, tokens: list[int]) -> torch.Tensor:  # feeds tokens[i] to request i; [B, vocab]
        for req, tok in zip(self.reqs, tokens):
            req.output_ids.append(tok)
            req.extend_len = 1
        slots = self.kv.alloc(len(self.reqs))
        assert slots is not None, "KV pool too small"
        batch = ScheduleBatch(ForwardMode.DECODE, self.reqs, decode_slots=slots)
        return self.runner.forward(build_forward_batch(batch, self.kv.req_pool, self.runner.device)).float()

    def release(self) -> None:
        for req in self.reqs:
            self.kv.release(req)


def teacher_forced_logits(runners: list[ModelRunner], prompts: list[list[int]], steps: int) -> list[torch.Tensor]:
    """Per runner [steps + 1, B, vocab] logits; every runner is fed runner 0's greedy tokens."""
    sessions = [Session(r, prompts) for r in runners]
    per_step = [[s.prefill().cpu()] for s in sessions]
    for _ in range(steps):
        tokens = per_step[0][-1].argmax(-1).tolist()
        for s, out in zip(sessions, per_step):
            out.append(s.decode(tokens).cpu())
    for s in sessions:
        s.release()
    return [torch.stack(out) for out in per_step]


def greedy_outputs(runner: ModelRunner, prompts: list[list[int]], steps: int) -> list[list[int]]:
    session = Session(runner, prompts)
    tokens = session.prefill().argmax(-1).tolist()
    outs = [[t] for t in tokens]
    for _ in range(steps - 1):
        tokens = session.decode(tokens).argmax(-1).tolist()
        for o, t in zip(outs, tokens):
            o.append(t)
    session.release()
    return outs


def prefix_agreement(got: list[list[int]], ref: list[list[int]]) -> float:
    """Mean fraction of each output that matches the reference before the first difference."""
    fractions = []
    for g, r in zip(got, ref):
        n = next((i for i, (a, b) in enumerate(zip(g, r)) if a != b), min(len(g), len(r)))
        fractions.append(n / max(len(r), 1))
    return sum(fractions) / len(fractions)


def token_match(got: list[list[int]], ref: list[list[int]]) -> float:
    pairs = [(a, b) for g, r in zip(got, ref) for a, b in zip(g, r)]
    return sum(a == b for a, b in pairs) / max(len(pairs), 1)


def compare_logits(ref: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """ref, other: [..., vocab] fp32 logits of the same contexts."""
    diff = other - ref
    centred = ref - ref.mean(-1, keepdim=True)
    ref_logp, logp = ref.log_softmax(-1), other.log_softmax(-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return {"max_abs_logit_err": float(diff.abs().max()),
            "rel_rms_logit_err": float(diff.pow(2).mean().sqrt() / centred.pow(2).mean().sqrt()),
            "mean_kl": float(kl.mean()),
            "top1_agreement": float((ref.argmax(-1) == other.argmax(-1)).float().mean())}


def measure(runners: dict[str, ModelRunner], prompts: list[list[int]], steps: int,
            free_running: bool = True) -> list[KVAccuracy]:
    """The first runner is the reference; one KVAccuracy per other runner. Without `free_running`
    the greedy fields are NaN (half the work)."""
    names = list(runners)
    logits = teacher_forced_logits(list(runners.values()), prompts, steps)
    greedy = {name: greedy_outputs(r, prompts, steps) for name, r in runners.items()} if free_running else None
    ref = names[0]
    nan = float("nan")
    return [KVAccuracy(kv_cache_dtype=name, reference=ref, **compare_logits(logits[0], logits[i]),
                       greedy_prefix_agreement=prefix_agreement(greedy[name], greedy[ref]) if greedy else nan,
                       greedy_token_match=token_match(greedy[name], greedy[ref]) if greedy else nan)
            for i, name in enumerate(names) if i > 0]


def text_prompts(model_path: str, num: int, length: int, seed: int) -> list[list[int]] | None:
    """In-distribution text for the demo model (it was trained on `pydoc_data.topics`), when the model
    directory has a tokenizer; None otherwise."""
    if not os.path.isfile(os.path.join(model_path, "tokenizer.json")):
        return None
    import pydoc_data.topics

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    docs = sorted(pydoc_data.topics.topics.values(), key=len, reverse=True)
    rng = random.Random(seed)
    prompts = []
    for doc in rng.sample(docs[: max(num * 4, 40)], num):
        ids = tok(doc, add_special_tokens=True)["input_ids"]
        prompts.append(ids[:length])
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default="models/demo")
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--attention-backend", default=None)
    parser.add_argument("--kv-dtypes", default="auto,bf16,fp8_e4m3", help="comma-separated; the first is the reference")
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--disable-cuda-graph", action="store_true")
    parser.add_argument("--out", default=None, help="append the JSON result to this file")
    a = parser.parse_args()
    device = torch.device("cuda", 0) if a.device == "cuda" else torch.device("cpu")
    dtypes = a.kv_dtypes.split(",")
    runners = {d: build_runner(a.model_path, d, device, load_format=a.load_format, dtype=a.dtype,
                               attention_backend=a.attention_backend, disable_cuda_graph=a.disable_cuda_graph,
                               max_total_tokens=a.num_prompts * (a.prompt_len + a.steps) * 2 + 64,
                               max_running_requests=a.num_prompts)
               for d in dtypes}
    prompts = None if a.load_format == "dummy" else text_prompts(a.model_path, a.num_prompts, a.prompt_len, a.seed)
    if prompts is None:
        vocab = next(iter(runners.values())).model_config.vocab_size
        rng = random.Random(a.seed)
        prompts = [[rng.randrange(10, vocab) for _ in range(a.prompt_len)] for _ in range(a.num_prompts)]
    results = measure(runners, prompts, a.steps)
    first = next(iter(runners.values()))
    setup = {"model_path": a.model_path, "load_format": a.load_format, "device": str(device),
             "model_dtype": str(first.model_config.dtype), "attention_backend": first.attention_backend_name,
             "cuda_graphs": first.graph_runner is not None, "num_prompts": len(prompts),
             "prompt_len": a.prompt_len, "steps": a.steps,
             "kv_tokens": {d: r.max_total_tokens for d, r in runners.items()}}
    print(f"{'kv dtype':>10} {'vs':>6} {'max|dlogit|':>12} {'rel rms':>9} {'mean KL':>9} {'top1 (TF)':>10} "
          f"{'greedy prefix':>14} {'greedy match':>13}")
    for r in results:
        print(f"{r.kv_cache_dtype:>10} {r.reference:>6} {r.max_abs_logit_err:12.4f} {r.rel_rms_logit_err:9.4f} "
              f"{r.mean_kl:9.2e} {r.top1_agreement:10.3f} {r.greedy_prefix_agreement:14.3f} {r.greedy_token_match:13.3f}")
    record = {"setup": setup, "results": [asdict(r) for r in results]}
    print(json.dumps(record))
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
