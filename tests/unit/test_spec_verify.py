"""Speculative acceptance (engine/speculative/verify.py) and prompt lookup (ngram.py) without a model.

The statistical tests draw many independent verify rows from fixed target / draft distributions and
compare the emitted tokens' empirical distribution with the target's exact sampling distribution
(total variation). A mutant that ignores q (accepts a draft with probability p(d) instead of p/q)
must fail the same bound, so the bound is tight enough to catch a broken acceptance rule.
"""

from __future__ import annotations

import pytest
import torch

from engine.req import Req
from engine.sampling_params import SamplingParams
from engine.speculative import verify
from engine.speculative.ngram import lookup_continuation
from engine.speculative.verify import accept

V = 6
N = 12000
TV_BOUND = 0.03  # sampling noise at N = 12000 over 6 outcomes is ~0.01


def _req(**sampling) -> Req:
    return Req(rid="r", origin_input_ids=[1], sampling=SamplingParams(**sampling))


def _exact_probs(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """The reference sampling distribution, written independently of the sampler."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k > 0:
        keep = probs.topk(top_k).indices
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[keep] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
    return probs / probs.sum()


def _tv(samples: list[int], probs: torch.Tensor) -> float:
    counts = torch.bincount(torch.tensor(samples), minlength=V).double()
    return 0.5 * float((counts / counts.sum() - probs.double()).abs().sum())


TARGET = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -2.0],   # position 0
                       [0.0, 1.5, -0.5, 1.0, 0.2, -1.0],   # position 1
                       [1.0, 0.0, 0.0, 2.0, -0.5, 0.3]])   # position 2 (bonus)
DRAFT = torch.tensor([[-2.0, -1.0, 0.0, 0.5, 1.0, 2.0],    # deliberately unlike the target
                      [1.0, -1.0, 2.0, 0.0, 0.0, 0.5]])


def _run(temperature: float, top_k: int, ignore_q: bool = False, point_mass: int | None = None):
    gen = torch.Generator().manual_seed(1234)
    reqs = [_req(temperature=temperature, top_k=top_k)] * N
    if point_mass is None:
        q = torch.stack([_exact_probs(DRAFT[j], temperature, top_k) for j in range(2)])  # [2, V]
        drafts_t = torch.stack([torch.multinomial(q[j], N, replacement=True, generator=gen) for j in range(2)], 1)
        drafts = drafts_t.tolist()
        draft_probs = None if ignore_q else q[None].expand(N, 2, V).contiguous()
    else:  # an ngram proposal: the same token every time
        drafts = [[point_mass, point_mass]] * N
        draft_probs = None
    logits = TARGET.repeat(N, 1)  # rows of request i: 3i .. 3i+2
    verdict = accept(logits, reqs, drafts, draft_probs, gen)
    first = [t[0] for t in verdict.tokens]
    second = [t[1] for t in verdict.tokens if len(t) >= 2]
    return verdict, first, second


@pytest.mark.parametrize("temperature,top_k", [(1.0, -1), (0.7, 4)])
def test_rejection_sampling_keeps_target_distribution(temperature, top_k):
    verdict, first, second = _run(temperature, top_k)
    p0, p1 = (_exact_probs(TARGET[j], temperature, top_k) for j in range(2))
    assert _tv(first, p0) < TV_BOUND
    # Given the first draft was accepted, the second token is decided at position 1 on its own.
    assert len(second) > 500 and _tv(second, p1) < 0.08  # fewer samples: wider noise
    assert 0 < sum(verdict.num_accepted) < 2 * N  # both branches were exercised


def test_point_mass_drafts_keep_target_distribution():
    _, first, _ = _run(1.0, -1, point_mass=1)
    assert _tv(first, _exact_probs(TARGET[0], 1.0, -1)) < TV_BOUND


def test_a_residual_that_ignores_q_is_caught(monkeypatch):
    """Resampling a rejected position from p instead of max(0, p - q) over-weights tokens the draft
    likes; the same bound must reject it (so the passing tests above are not vacuous)."""
    _, first, _ = _run(1.0, -1)
    good = _tv(first, _exact_probs(TARGET[0], 1.0, -1))
    monkeypatch.setattr(verify, "residual", lambda p, q: p)
    _, first, _ = _run(1.0, -1)
    bad = _tv(first, _exact_probs(TARGET[0], 1.0, -1))
    assert good < TV_BOUND < 2 * TV_BOUND < bad, (good, bad)


def test_point_mass_acceptance_is_valid_for_any_draft():
    """Treating sampled drafts as point masses (accept with p(d), resample p without d) is also
    exact — just a lower acceptance rate — which is why ngram drafts need no q."""
    verdict_q, first_q, _ = _run(1.0, -1)
    verdict_pm, first_pm, _ = _run(1.0, -1, ignore_q=True)
    assert _tv(first_pm, _exact_probs(TARGET[0], 1.0, -1)) < TV_BOUND
    assert sum(verdict_pm.num_accepted) < sum(verdict_q.num_accepted)


def test_greedy_keeps_matching_prefix_and_target_token():
    logits = torch.full((4, V), -5.0)
    for row, tok in enumerate([3, 1, 4, 2]):
        logits[row, tok] = 5.0
    gen = torch.Generator().manual_seed(0)
    greedy = _req(temperature=0.0)
    verdict = accept(logits, [greedy], [[3, 1, 5]], None, gen)
    assert verdict.tokens == [[3, 1, 4]] and verdict.num_accepted == [2]
    verdict = accept(logits, [greedy], [[3, 1, 4]], None, gen)
    assert verdict.tokens == [[3, 1, 4, 2]] and verdict.num_accepted == [3]  # all accepted + bonus
    verdict = accept(logits[:1], [greedy], [[]], None, gen)
    assert verdict.tokens == [[3]] and verdict.num_accepted == [0]


def test_ngram_lookup_prefers_longest_then_most_recent_match():
    seq = [5, 6, 7, 8, 1, 2, 9, 6, 7, 3, 4, 6, 7]
    # suffix [6, 7] occurs at 7 (most recent, followed by 3, 4) and at 1 (followed by 8)
    assert lookup_continuation(seq, 3, max_match=2, min_match=1) == [3, 4, 6]
    # a longer suffix [2, 9, 6, 7]... does not occur earlier; [9, 6, 7] neither; [6, 7] does
    assert lookup_continuation(seq, 2, max_match=4, min_match=2) == [3, 4]
    assert lookup_continuation([1, 2, 3], 4, max_match=3, min_match=1) == []
    assert lookup_continuation([4, 4, 4], 4, max_match=2, min_match=2) == [4]
    assert lookup_continuation(seq, 0, max_match=2, min_match=1) == []
