"""Drives one rank's Scheduler in-process (CPU unless `device` says otherwise) with scripted arrivals: request i arrives before
scheduler step `arrive_at[i]`. Steps, not seconds, so a staggered-arrival test does not depend on the
machine's speed, and the same script can run under different scheduler settings."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.args import ServerArgs
from engine.distributed.parallel_state import TPContext
from engine.messages import BatchOutMsg, GenerateReqMsg
from engine.model_config import create_model_config
from engine.model_runner import ModelRunner
from engine.scheduler import Scheduler
from engine.tokenizer import eos_token_ids, load_tokenizer


@dataclass
class ReqResult:
    output_ids: list[int] = field(default_factory=list)
    finish_reason: dict[str, Any] | None = None
    output_logprobs: list[list[Any]] = field(default_factory=list)
    input_logprobs: list[list[Any]] | None = None


@dataclass
class Arrival:
    step: int
    msg: GenerateReqMsg


class SchedulerHarness:
    def __init__(self, model_path: str, device: str = "cpu", **overrides: Any) -> None:
        args = ServerArgs(model_path=model_path, device=device, random_seed=0, **overrides)
        self.args = args
        torch_device = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
        self.runner = ModelRunner(args, create_model_config(args, device), TPContext(), torch_device)
        self.tokenizer = load_tokenizer(args.resolved_tokenizer_path, False)
        eos = eos_token_ids(self.tokenizer, self.runner.model_config.hf_config)
        self.results: dict[str, ReqResult] = {}
        self.scheduler = Scheduler(args, self.runner, TPContext(), self.tokenizer, eos, self._on_msg)

    def _on_msg(self, msg: Any) -> None:
        if not isinstance(msg, BatchOutMsg):
            return
        for out in msg.outputs:
            res = self.results.setdefault(out.rid, ReqResult())
            res.output_ids.extend(out.new_token_ids)
            res.output_logprobs.extend(out.output_logprobs or [])
            if out.input_logprobs is not None:
                res.input_logprobs = out.input_logprobs
            if out.finished:
                res.finish_reason = out.finish_reason

    def run(self, arrivals: list[Arrival], max_steps: int = 20000) -> dict[str, ReqResult]:
        pending = sorted(arrivals, key=lambda a: a.step)
        step = 0
        while pending or self.scheduler.has_work:
            while pending and pending[0].step <= step:
                self.scheduler.handle(pending.pop(0).msg)
            self.scheduler.step()
            step += 1
            assert step < max_steps, "the scheduler did not finish"
        assert all(r.finish_reason is not None for r in self.results.values())
        return self.results


def generate_msg(rid: str, input_ids: list[int], **sampling: Any) -> GenerateReqMsg:
    extra = {k: sampling.pop(k) for k in ("return_logprob", "logprob_start_len", "top_logprobs_num", "stream")
             if k in sampling}
    return GenerateReqMsg(rid=rid, input_ids=input_ids, sampling={"temperature": 0, **sampling}, **extra)


# Small chunks so the workload's prompts span several steps and decodes run beside them.
STAGGERED_CHUNK = 24


def staggered_workload(vocab_limit: int = 300) -> list[Arrival]:
    """Eight requests, prompts of 5-69 tokens, one every 3 steps while earlier ones decode;
    request i asks for 12 + 3i tokens (ignore_eos)."""
    rng = random.Random(7)
    arrivals = []
    for i in range(8):
        prompt = [rng.randrange(10, vocab_limit) for _ in range(rng.randrange(5, 70))]
        arrivals.append(Arrival(step=3 * i, msg=generate_msg(f"r{i}", prompt, max_new_tokens=12 + 3 * i,
                                                             ignore_eos=True)))
    return arrivals
