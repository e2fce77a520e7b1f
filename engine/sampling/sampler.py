"""Batched sampling on the logits' device.

Order as in SGLang/HF: logit bias and penalties on the raw logits, stop tokens masked until
min_new_tokens, then temperature, top-k, top-p, min-p on the probabilities. Sampling is an
exponential race (argmax p / E, E ~ Exp(1)), which lets seeded rows draw their noise from their own
generator (seed, step) so a seed reproduces regardless of what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.req import Req


@dataclass
class SampleOutput:
    next_ids: list[int]
    logprobs: list[float]  # raw model log-probability of each chosen token
    top_logprobs: list[list[list[float | int]] | None]  # per row: [[logprob, token_id], ...]


def apply_penalties(logits: torch.Tensor, reqs: list[Req]) -> torch.Tensor:
    """Frequency/presence on output tokens (OpenAI), repetition on prompt + output tokens (HF)."""
    bsz, vocab = logits.shape
    device = logits.device
    for i, req in enumerate(reqs):
        sp = req.sampling
        if sp.logit_bias:
            ids = torch.tensor(list(sp.logit_bias.keys()), device=device)
            logits[i, ids] += torch.tensor(list(sp.logit_bias.values()), device=device, dtype=logits.dtype)
        if sp.frequency_penalty or sp.presence_penalty:
            counts = torch.zeros(vocab, device=device, dtype=logits.dtype)
            if req.output_ids:
                counts.scatter_add_(0, torch.tensor(req.output_ids, device=device),
                                    torch.ones(len(req.output_ids), device=device, dtype=logits.dtype))
            logits[i] -= sp.frequency_penalty * counts + sp.presence_penalty * (counts > 0).to(logits.dtype)
        if sp.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(req.fill_ids)), device=device)
            vals = logits[i, seen]
            logits[i, seen] = torch.where(vals > 0, vals / sp.repetition_penalty, vals * sp.repetition_penalty)
    return logits


def mask_stop_tokens(logits: torch.Tensor, reqs: list[Req], eos_ids: list[int]) -> torch.Tensor:
    for i, req in enumerate(reqs):
        # A grammar decides where its output may end; masking EOS there could leave no token at all.
        if len(req.output_ids) < req.sampling.min_new_tokens and req.grammar is None:
            stop = list(req.sampling.stop_token_ids) + ([] if req.sampling.ignore_eos else eos_ids)
            if stop:
                logits[i, torch.tensor(stop, device=logits.device)] = float("-inf")
    return logits


def filter_probs(probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """probs [B, V]; top_k [B] (vocab size = off), top_p [B], min_p [B]. Returns renormalised probs."""
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    rank = torch.arange(probs.shape[-1], device=probs.device)[None, :]
    drop = rank >= top_k[:, None]
    cum_before = sorted_p.cumsum(dim=-1) - sorted_p
    drop |= cum_before > top_p[:, None]  # keep the smallest set whose mass reaches top_p
    drop |= sorted_p < min_p[:, None] * sorted_p[:, :1]
    drop[:, 0] = False  # the most likely token always survives
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
    return out / out.sum(dim=-1, keepdim=True)


def argmax(x: torch.Tensor) -> torch.Tensor:
    """Per-row argmax [B]; on CUDA in chunks (kernels/argmax.py: torch's takes ~30 us for a 128k-vocabulary row)."""
    if x.is_cuda and x.stride(-1) == 1:
        from kernels.argmax import argmax_rows  # Triton: CUDA installs only (the CPU image has none)

        return argmax_rows(x)
    return x.argmax(dim=-1)


class Sampler:
    def __init__(self, device: torch.device, seed: int | None) -> None:
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed if seed is not None else torch.seed() % (2**31))

    def _noise(self, reqs: list[Req], vocab: int) -> torch.Tensor:
        q = torch.empty((len(reqs), vocab), device=self.device)
        q.exponential_(generator=self.generator)
        for i, req in enumerate(reqs):
            seed = req.sampling.sampling_seed
            if seed is not None:
                g = torch.Generator(device=self.device)
                g.manual_seed((seed * 1_000_003 + len(req.output_ids)) % (2**63))
                q[i].exponential_(generator=g)
        return q

    @staticmethod
    def edits_logits(reqs: list[Req]) -> bool:
        """Whether any row needs bias, penalties or stop-token masking before it is sampled."""
        for r in reqs:
            sp = r.sampling
            if (sp.logit_bias or sp.frequency_penalty or sp.presence_penalty or sp.repetition_penalty != 1.0
                    or len(r.output_ids) < sp.min_new_tokens):
                return True
        return False

    @torch.no_grad()
    def choose(self, logits: torch.Tensor, reqs: list[Req], eos_ids: list[int],
               allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Next token per row as a device tensor [B] int64; no host sync, so overlap scheduling can
        queue the next step behind it. `logits` [B, V] is not modified. `allowed` [B, V] bool is the
        grammar mask (engine.grammar), applied after penalties so nothing can re-enable a token. `logits` may be
        in the model's dtype: greedy rows with nothing to edit take its argmax as it is (widening to fp32 is
        exact, and ties resolve to the lowest index either way), the rest is widened first."""
        edits = self.edits_logits(reqs)
        if not edits and allowed is None and all(r.sampling.is_greedy for r in reqs):
            return argmax(logits)
        logits = logits.float()  # [B, V]
        if edits:
            logits = mask_stop_tokens(apply_penalties(logits.clone(), reqs), reqs, eos_ids)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        next_ids = argmax(logits)
        if all(r.sampling.is_greedy for r in reqs):
            return next_ids
        vocab = logits.shape[-1]
        temp = torch.tensor([r.sampling.temperature or 1.0 for r in reqs]).to(self.device, non_blocking=True)
        probs = torch.softmax(logits / temp[:, None], dim=-1)
        top_k = torch.tensor([r.sampling.top_k if r.sampling.top_k > 0 else vocab for r in reqs])
        top_p = torch.tensor([r.sampling.top_p for r in reqs])
        min_p = torch.tensor([r.sampling.min_p for r in reqs])
        # non_blocking: a blocking host-to-device copy would wait for the queued forward (no overlap)
        probs = filter_probs(probs, top_k.to(self.device, non_blocking=True), top_p.to(self.device, non_blocking=True),
                             min_p.to(self.device, non_blocking=True))
        sampled = argmax(probs / self._noise(reqs, vocab))
        greedy_mask = torch.tensor([r.sampling.is_greedy for r in reqs]).to(self.device, non_blocking=True)
        return torch.where(greedy_mask, next_ids, sampled)

    @torch.no_grad()
    def sample(self, logits: torch.Tensor, reqs: list[Req], eos_ids: list[int],
               allowed: torch.Tensor | None = None) -> SampleOutput:
        """Logprobs are the model's raw distribution, before any grammar mask."""
        next_ids = self.choose(logits, reqs, eos_ids, allowed)
        if not any(r.return_logprob for r in reqs):
            # The full-vocab log_softmax is only worth its pass over [B, V] when someone reads it.
            return SampleOutput(next_ids=next_ids.tolist(), logprobs=[0.0] * len(reqs), top_logprobs=[None] * len(reqs))
        raw_logprobs = torch.log_softmax(logits.float(), dim=-1)
        chosen = raw_logprobs.gather(1, next_ids[:, None]).squeeze(1)
        max_top = max((r.top_logprobs_num for r in reqs if r.return_logprob), default=0)
        tops: list[list[list[float | int]] | None] = [None] * len(reqs)
        if max_top > 0:
            vals, ids = raw_logprobs.topk(max_top, dim=-1)
            vals, ids = vals.tolist(), ids.tolist()
            for i, r in enumerate(reqs):
                if r.return_logprob and r.top_logprobs_num > 0:
                    tops[i] = [[vals[i][j], ids[i][j]] for j in range(r.top_logprobs_num)]
        return SampleOutput(next_ids=next_ids.tolist(), logprobs=chosen.tolist(), top_logprobs=tops)
