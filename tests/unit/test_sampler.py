"""Sampling building blocks against their formulas."""

from __future__ import annotations

import torch

from engine.req import Req
from engine.sampling.sampler import Sampler, apply_penalties, filter_probs, mask_stop_tokens
from engine.sampling_params import SamplingParams


def _req(output_ids, prompt=(0,), **params) -> Req:
    return Req(rid="r", origin_input_ids=list(prompt), sampling=SamplingParams.from_dict(params),
               output_ids=list(output_ids))


def test_frequency_and_presence_penalties_follow_openai_formula():
    logits = torch.zeros(1, 6)
    req = _req([2, 2, 3], frequency_penalty=0.5, presence_penalty=0.25)
    out = apply_penalties(logits.clone(), [req])
    # logit -= freq * count + presence * (count > 0)
    assert torch.allclose(out[0], torch.tensor([0, 0, -1.25, -0.75, 0, 0]))


def test_repetition_penalty_follows_hf_formula():
    logits = torch.tensor([[2.0, -2.0, 1.0, 4.0]])
    req = _req([1], prompt=[0], repetition_penalty=2.0)
    out = apply_penalties(logits.clone(), [req])
    # positive logits of seen tokens are divided, negative ones multiplied
    assert torch.allclose(out[0], torch.tensor([1.0, -4.0, 1.0, 4.0]))


def test_logit_bias_and_min_new_tokens_mask():
    logits = torch.zeros(1, 5)
    req = _req([], logit_bias={"3": 5.0}, min_new_tokens=2, stop_token_ids=[4])
    out = mask_stop_tokens(apply_penalties(logits.clone(), [req]), [req], eos_ids=[1])
    assert out[0, 3] == 5.0 and out[0, 4] == float("-inf") and out[0, 1] == float("-inf")


def test_filter_probs_top_k_top_p_min_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3)
    out = filter_probs(probs, top_k=torch.tensor([2, 4, 4]), top_p=torch.tensor([1.0, 0.7, 1.0]),
                       min_p=torch.tensor([0.0, 0.0, 0.2]))
    assert torch.allclose(out[0], torch.tensor([0.625, 0.375, 0, 0]))
    assert torch.allclose(out[1], torch.tensor([0.625, 0.375, 0, 0]))  # 0.5 + 0.3 reaches 0.7
    assert torch.allclose(out[2], torch.tensor([0.5, 0.3, 0.15, 0]) / 0.95)  # 0.05 < 0.2 * 0.5


def test_sampling_distribution_follows_probs():
    sampler = Sampler(torch.device("cpu"), seed=0)
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    req = _req([], temperature=1.0)
    counts = torch.zeros(3)
    for _ in range(3000):
        counts[sampler.sample(logits, [req], eos_ids=[]).next_ids[0]] += 1
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


def test_seeded_rows_ignore_batch_neighbours():
    logits = torch.randn(3, 50)
    seeded = _req([1, 2], temperature=1.0, sampling_seed=42)
    other = _req([], temperature=1.0)
    a = Sampler(torch.device("cpu"), seed=1).sample(logits, [seeded, other, other], []).next_ids[0]
    b = Sampler(torch.device("cpu"), seed=2).sample(logits[:1], [seeded], []).next_ids[0]
    assert a == b


def test_greedy_rows_pick_the_same_token_from_model_dtype_logits():
    # bf16 logits with ties (coarse values) and rows that need fp32 (a penalty, a grammar mask): every row's
    # choice equals the choice from the same logits widened to fp32.
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(6, 300, generator=gen) * 4).round().to(torch.bfloat16)
    logits[0, [3, 200]] = logits[0].max() + 1  # a tie: the lower index wins in both dtypes
    sampler = Sampler(torch.device("cpu"), seed=0)
    plain = [_req([], temperature=0) for _ in range(6)]
    got = sampler.choose(logits, plain, eos_ids=[])
    assert got.tolist() == sampler.choose(logits.float(), plain, eos_ids=[]).tolist() and got[0] == 3
    penalised = [_req([5, 7], temperature=0, repetition_penalty=1.3) for _ in range(6)]
    assert torch.equal(sampler.choose(logits, penalised, []), sampler.choose(logits.float(), penalised, []))
    allowed = torch.rand(6, 300, generator=gen) > 0.5
    assert torch.equal(sampler.choose(logits, plain, [], allowed), sampler.choose(logits.float(), plain, [], allowed))
