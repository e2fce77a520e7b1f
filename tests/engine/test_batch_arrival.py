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


ROW_PLACE_SCRIPT = """
import torch
torch.manual_seed(0)
w, a = torch.randn(768, 256), torch.randn(3, 256)
for rows in (5, 6, 7, 9, 10, 11):
    y = torch.nn.functional.linear(a[:1].expand(rows, 256).contiguous(), w)
    assert all(torch.equal(y[i], y[0]) for i in range(rows)), rows
"""


def test_rank_processes_round_a_row_alike_wherever_it_sits() -> None:
    """A rank's interpreter (its environment from `rank_env`) computes a row of a linear layer bit-equal whatever
    its place in the batch: with MKL's default sgemm on AVX-512 hosts, rows 4+ of a 5-7 or 9-11 row batch
    rounded differently, so two requests with one prompt prefix in one step could get different logprobs.
    (On hosts whose BLAS never did this the check holds either way.)"""
    import subprocess
    import sys

    from engine.rank_launcher import rank_env

    done = subprocess.run([sys.executable, "-c", ROW_PLACE_SCRIPT], env=rank_env(""), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
