"""A draft model shares the GPU with its target: the target's KV budget must leave room for the draft's
weights and its pool (as many tokens), else the draft's pool takes the activations' headroom (found on an
H200: a self-draft engine aborted every request with a CUDA out-of-memory at its first step). The
arithmetic runs here on a CPU runner with the device's memory figures faked."""

from __future__ import annotations

import os

import torch

from engine.args import ServerArgs
from engine.distributed.parallel_state import TPContext
from engine.mem.kv_pool import KVPool
from engine.model_config import create_model_config
from engine.model_runner import GPU_RESERVE_BYTES, ModelRunner
from engine.weight_files import safetensors_files

GiB = 1 << 30


def _runner(model: str, **extra) -> ModelRunner:
    args = ServerArgs(model_path=model, device="cpu", max_total_tokens=4096, random_seed=0, **extra)
    return ModelRunner(args, create_model_config(args, "cpu"), TPContext(), torch.device("cpu"))


def _gpu_tokens(runner: ModelRunner, monkeypatch, bpt: int) -> int:
    runner.args = runner.args.replace(max_total_tokens=None)
    total, free_before, free_after = 80 * GiB, 80 * GiB, 79 * GiB  # 1 GiB of target weights loaded
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_after, total))
    return runner._gpu_kv_tokens(free_before, total, bpt)


def test_draft_share_reads_the_draft_config_and_files(tiny_llama, tiny_model_factory):
    draft = tiny_model_factory("qwen3")
    runner = _runner(tiny_llama, speculative_model=draft)
    cfg = create_model_config(ServerArgs(model_path=draft, device="cpu"), "cpu")
    expected_bpt = KVPool.bytes_per_token(cfg.num_layers, cfg.kv_heads_per_rank(1), cfg.head_dim, cfg.dtype)
    assert runner._draft_model_share() == (expected_bpt, sum(os.path.getsize(f) for f in safetensors_files(draft)))
    assert _runner(tiny_llama)._draft_model_share() == (0, 0)
    assert _runner(tiny_llama, speculative_algorithm="ngram")._draft_model_share() == (0, 0)


def test_target_pool_leaves_room_for_the_draft(tiny_llama, monkeypatch):
    bpt = 4096
    alone = _gpu_tokens(_runner(tiny_llama), monkeypatch, bpt)
    budget = min(80 * GiB * 0.85 - 1 * GiB, 79 * GiB - GPU_RESERVE_BYTES)
    assert alone == int(budget // bpt)
    runner = _runner(tiny_llama, speculative_model=tiny_llama)  # self-draft: same bytes per token
    draft_bpt, draft_weights = runner._draft_model_share()
    shared = _gpu_tokens(runner, monkeypatch, bpt)
    # Both pools (same token count) plus the draft's weights fit in the budget the target alone had.
    assert shared * (bpt + draft_bpt) + draft_weights <= budget
    assert shared >= (budget - draft_weights) / (bpt + draft_bpt) - 1
