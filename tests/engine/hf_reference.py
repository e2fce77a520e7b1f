"""HF transformers reference: greedy continuations and prompt logprobs of the same tiny models, and a
measure of how far two greedy outputs agree."""

from __future__ import annotations

from functools import cache

import torch


@cache
def hf_model(path: str):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()


@torch.no_grad()
def hf_greedy(path: str, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding with the KV cache, never stopping at EOS (ignore_eos)."""
    model = hf_model(path)
    ids = torch.tensor([prompt_ids])
    out = model(ids, use_cache=True)
    past, out_ids = out.past_key_values, []
    next_id = int(out.logits[0, -1].argmax())
    for _ in range(max_new_tokens):
        out_ids.append(next_id)
        out = model(torch.tensor([[next_id]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        next_id = int(out.logits[0, -1].argmax())
    return out_ids


@torch.no_grad()
def hf_prompt_logprobs(path: str, prompt_ids: list[int]) -> torch.Tensor:
    """[len-1, vocab] log-softmax rows: row i predicts prompt token i + 1."""
    model = hf_model(path)
    logits = model(torch.tensor([prompt_ids])).logits[0].float()
    return torch.log_softmax(logits[:-1], dim=-1)


def greedy_agreement(got: list[list[int]], ref: list[list[int]]) -> float:
    """Mean fraction of each output that matches the reference before the first difference."""
    fractions = []
    for g, r in zip(got, ref):
        n = next((i for i, (a, b) in enumerate(zip(g, r)) if a != b), min(len(g), len(r)))
        fractions.append(n / max(len(r), 1))
    return sum(fractions) / len(fractions)
