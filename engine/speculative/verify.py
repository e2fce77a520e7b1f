"""Acceptance of drafted tokens against the target's logits.

Greedy rows keep the longest prefix of drafts equal to the target's argmax, then the target's own
argmax token (a "bonus" when every draft matched) — so the output is exactly non-speculative greedy.

Sampled rows use speculative rejection sampling (Leviathan et al. 2023; Chen et al. 2023): draft d
drawn from q is accepted with probability min(1, p(d) / q(d)); at the first rejection the token is
drawn from norm(max(0, p - q)); when all are accepted one more is drawn from p at the next position.
Every emitted token then has exactly the target's distribution p. p and q are the *sampling*
distributions — temperature, top-k, top-p and min-p applied as the normal sampler applies them. An
ngram draft is a point mass (q(d) = 1), so it is accepted with probability p(d) and the residual is
p with d removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.req import Req
from engine.sampling.sampler import filter_probs


@dataclass
class Verdict:
    tokens: list[list[int]]  # per request: accepted drafts then one token from the target
    num_accepted: list[int]  # accepted drafts per request


def sampling_probs(logits: torch.Tensor, reqs: list[Req]) -> torch.Tensor:
    """logits [N, V] -> the sampler's distribution per row [N, V] (row i uses reqs[i]'s params)."""
    vocab = logits.shape[-1]
    device = logits.device
    temp = torch.tensor([(r.sampling.temperature or 1.0) if not r.sampling.is_greedy else 1.0 for r in reqs],
                        device=device)
    probs = torch.softmax(logits.float() / temp[:, None], dim=-1)
    top_k = torch.tensor([r.sampling.top_k if r.sampling.top_k > 0 else vocab for r in reqs], device=device)
    top_p = torch.tensor([r.sampling.top_p for r in reqs], device=device)
    min_p = torch.tensor([r.sampling.min_p for r in reqs], device=device)
    return filter_probs(probs, top_k, top_p, min_p)


def accept(logits: torch.Tensor, reqs: list[Req], drafts: list[list[int]], draft_probs: torch.Tensor | None,
           generator: torch.Generator) -> Verdict:
    """logits [sum(len(drafts[i]) + 1), V]: request i's rows are consecutive, row j predicting the
    token after draft j - 1 (row 0 follows the last committed token)."""
    offsets, n = [], 0
    for d in drafts:
        offsets.append(n)
        n += len(d) + 1
    argmax = logits.argmax(dim=-1).tolist()
    sampled = [i for i, r in enumerate(reqs) if not r.sampling.is_greedy]
    tokens: list[list[int]] = []
    num_accepted: list[int] = []
    for i, d in enumerate(drafts):  # greedy rows (sampled rows are overwritten below)
        row = argmax[offsets[i]:offsets[i] + len(d) + 1]
        a = 0
        while a < len(d) and d[a] == row[a]:
            a += 1
        tokens.append(d[:a] + [row[a]])
        num_accepted.append(a)
    if sampled:
        _rejection_sample(logits, reqs, drafts, draft_probs, generator, offsets, sampled, tokens, num_accepted)
    return Verdict(tokens=tokens, num_accepted=num_accepted)


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Where the target puts more mass than the draft: what a rejected position is drawn from."""
    return (p - q).clamp(min=0.0)


def _rejection_sample(logits, reqs, drafts, draft_probs, generator, offsets, sampled, tokens, num_accepted) -> None:
    device = logits.device
    row_idx = [offsets[i] + j for i in sampled for j in range(len(drafts[i]) + 1)]
    row_reqs = [reqs[i] for i in sampled for _ in range(len(drafts[i]) + 1)]
    probs = sampling_probs(logits[row_idx], row_reqs)  # [M, V]
    local = {}  # (request, step) -> row of probs
    m = 0
    for i in sampled:
        for j in range(len(drafts[i]) + 1):
            local[(i, j)] = m
            m += 1
    draft_pos = [(i, j) for i in sampled for j in range(len(drafts[i]))]
    p_d, q_d = [], []
    if draft_pos:
        rows = torch.tensor([local[k] for k in draft_pos], device=device)
        toks = torch.tensor([drafts[i][j] for i, j in draft_pos], device=device)
        p_d = probs[rows, toks].tolist()
        if draft_probs is not None:
            q_d = draft_probs[torch.tensor([i for i, _ in draft_pos], device=device),
                              torch.tensor([j for _, j in draft_pos], device=device), toks].tolist()
        else:
            q_d = [1.0] * len(draft_pos)
    uniforms = torch.rand(len(draft_pos), generator=generator, device=device).tolist() if draft_pos else []
    k = 0
    for i in sampled:
        d = drafts[i]
        a = 0
        while a < len(d) and uniforms[k + a] * q_d[k + a] < p_d[k + a]:
            a += 1
        k += len(d)
        p = probs[local[(i, a)]]
        if a < len(d):  # rejected at a: draw from the residual max(0, p - q)
            if draft_probs is not None:
                q = draft_probs[i, a].to(p.dtype)
            else:
                q = torch.zeros_like(p)
                q[d[a]] = 1.0
            rest = residual(p, q)
            p = rest if float(rest.sum()) > 0 else p
        nxt = int(torch.multinomial(p / p.sum(), 1, generator=generator).item())
        tokens[i] = d[:a] + [nxt]
        num_accepted[i] = a
