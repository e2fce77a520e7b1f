"""Requests a caller sends in one event-loop turn (the items of a batched `/generate`, SGLang's `select` choices)
reach the engine together and run in one step, so equal prompt prefixes get bit-equal logprobs.

SGLang's greedy `select` compares the choices' prompt logprobs for equality, column by column: sent one by one,
the first item could wake the idle engine and run alone, in a batch of its own, and its shared-prefix logprobs
then differed from its siblings' in the last bits (half the rounds on the demo model), so the choice went by that
noise (tests/lang/test_lang_parity.py::test_greedy_token_select failed that way)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.args import ServerArgs
from engine.client import EngineClient
from engine.sampling_params import SamplingParams

DEMO_MODEL = str(Path(__file__).resolve().parents[2] / "models" / "demo")
PROMPT = "The module for files is"
CHOICES = [" os", " sys", " json", " os.path"]


@pytest.fixture(scope="module")
def engine():
    loop = asyncio.new_event_loop()
    client = EngineClient(ServerArgs(model_path=DEMO_MODEL, device="cpu", random_seed=0))
    loop.run_until_complete(client.start(timeout=180))
    yield client, loop
    loop.run_until_complete(client.stop())
    loop.close()


async def _prompt_logprobs(client: EngineClient, ids: list[int], start: int, rid: str) -> list[float]:
    final: dict = {}
    async for item in client.generate(ids, SamplingParams.from_dict({"max_new_tokens": 0, "temperature": 0}),
                                      rid=rid, return_logprob=True, logprob_start_len=start):
        final = item
    return [entry[0] for entry in final["meta_info"]["input_token_logprobs"]]


def test_one_turn_of_requests_shares_a_step(engine) -> None:
    client, loop = engine
    prefix = client.tokenizer.encode(PROMPT)
    prompts = [client.tokenizer.encode(PROMPT + choice) for choice in CHOICES]
    start = len(prefix) - 2

    async def round_(i: int) -> list[list[float]]:
        await client.flush_cache()
        await _prompt_logprobs(client, prefix, 0, f"warm-{i}")  # SGLang's select caches the prefix first
        return await asyncio.gather(*(_prompt_logprobs(client, ids, start, f"r{i}-{k}")
                                      for k, ids in enumerate(prompts)))

    for i in range(8):
        rows = loop.run_until_complete(round_(i))
        # The two tokens before the choices are the same in every prompt: equal to the last bit.
        shared = [row[:2] for row in rows]
        assert all(values == shared[0] for values in shared), f"round {i}: {shared}"
