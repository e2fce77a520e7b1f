"""GrammarManager admission without a model: `--grammar-backend none` and a missing tokenizer are
400-shaped aborts; the HTTP layer turns such aborts into OpenAI errors."""

from __future__ import annotations

from types import SimpleNamespace

from app.generation import request_rejection
from engine.distributed.parallel_state import TPContext
from engine.grammar.manager import GrammarManager
from engine.req import Req
from engine.sampling_params import SamplingParams


def _manager(backend: str) -> GrammarManager:
    args = SimpleNamespace(grammar_backend=backend, grammar_compile_timeout=5.0,
                           constrained_json_max_whitespace_cnt=None, enable_jump_forward=False)
    return GrammarManager(args, tokenizer=None, vocab_size=32, eos_ids=[2], tp=TPContext(), context_len=64)


def _req(**sampling) -> Req:
    return Req(rid="r1", origin_input_ids=[1, 2], sampling=SamplingParams.from_dict(sampling))


def test_backend_none_refuses_with_400():
    reason = _manager("none").admit(_req(regex="a+"))
    assert reason["type"] == "abort" and reason["status_code"] == 400 and reason["param"] == "regex"
    assert "--grammar-backend none" in reason["message"]
    err = request_rejection({"meta_info": {"finish_reason": reason}})
    assert err.status == 400 and err.param == "regex"
    assert request_rejection({"meta_info": {"finish_reason": {"type": "abort", "message": "aborted"}}}) is None


def test_missing_tokenizer_fails_the_request_alone():
    manager = _manager("xgrammar")
    req = _req(json_schema='{"type": "integer"}')
    assert manager.admit(req) is None and manager.queue
    ready, failed = [], []
    for _ in range(200):
        r, f = manager.poll()
        ready += r
        failed += f
        if failed or ready:
            break
        manager.wait_briefly(0.05)
    assert not ready and failed[0][0] is req
    assert "tokenizer" in failed[0][1]["message"] and failed[0][1]["status_code"] == 400
    assert not manager.queue and manager.stats()["num_grammar_queue_reqs"] == 0
