"""A request that raises inside a rank fails alone (its rid gets an abort finish with the error), the
others finish normally, the rank keeps serving and no KV slot leaks. In-process scheduler on the tiny
model (TP 1), with a fault injected for one request."""

from __future__ import annotations

from typing import Any

import pytest

from engine.args import ServerArgs
from engine.ipc import IpcConfig, find_free_port
from engine.messages import BatchOutMsg, GenerateReqMsg
from engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def rank(tiny_llama):
    from engine.rank_process import _build

    sent: list[Any] = []
    args = ServerArgs(model_path=tiny_llama, device="cpu", max_total_tokens=4096)
    scheduler, _tp, _info = _build(args, IpcConfig("", "", find_free_port()), 0, sent.append)
    return scheduler, sent


def _submit(scheduler, rid: str, prompt: list[int], max_new_tokens: int = 5, **extra: Any) -> None:
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0, ignore_eos=True)
    scheduler.handle(GenerateReqMsg(rid=rid, input_ids=prompt, sampling=sampling.to_dict(), **extra))


def _run(scheduler, sent: list[Any]) -> dict[str, Any]:
    sent.clear()
    for _ in range(200):
        if not scheduler.has_work:
            break
        scheduler.step_safely()
    return {o.rid: o for m in sent if isinstance(m, BatchOutMsg) for o in m.outputs if o.finished}


def _free(scheduler) -> int:
    return scheduler.kv.allocator.num_free + scheduler.kv.tree.evictable_size


def test_sampling_error_fails_only_that_request(rank, monkeypatch) -> None:
    scheduler, sent = rank
    _submit(scheduler, "ref", [5, 6, 7, 8])
    reference = _run(scheduler, sent)["ref"]
    free_before = _free(scheduler)
    real = scheduler.sampler.choose

    def choose(logits, reqs, eos_ids, allowed=None):
        if any(r.rid == "bad" for r in reqs):
            raise RuntimeError("injected sampling fault")
        return real(logits, reqs, eos_ids, allowed)

    monkeypatch.setattr(scheduler.sampler, "choose", choose)
    _submit(scheduler, "good", [5, 6, 7, 8])
    _submit(scheduler, "bad", [9, 10, 11])
    _submit(scheduler, "also-good", [12, 13])
    outs = _run(scheduler, sent)
    assert outs["bad"].finish_reason["type"] == "abort"
    assert "injected sampling fault" in outs["bad"].finish_reason["message"]
    assert outs["good"].finish_reason == {"type": "length", "length": 5}
    assert outs["also-good"].finish_reason == {"type": "length", "length": 5}
    assert outs["good"].new_token_ids == reference.new_token_ids  # unaffected by its failed neighbour
    assert scheduler.num_failed_reqs >= 1
    assert _free(scheduler) == free_before  # the failed request's KV was returned too


def test_forward_error_fails_that_step_and_the_rank_serves_on(rank, monkeypatch) -> None:
    scheduler, sent = rank
    free_before = _free(scheduler)
    real = scheduler.runner.forward
    calls = {"n": 0}

    def forward(fb, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected forward fault")
        return real(fb, **kwargs)

    monkeypatch.setattr(scheduler.runner, "forward", forward)
    _submit(scheduler, "victim", [20, 21, 22])
    outs = _run(scheduler, sent)
    assert outs["victim"].finish_reason["type"] == "abort" and "injected forward fault" in outs["victim"].finish_reason[
        "message"]
    _submit(scheduler, "after", [20, 21, 22])
    outs = _run(scheduler, sent)
    assert outs["after"].finish_reason == {"type": "length", "length": 5}
    assert _free(scheduler) == free_before


def test_invalid_values_are_refused_by_the_rank_itself(rank) -> None:
    """Defence in depth: values the API process refuses are refused by the rank too, without raising."""
    scheduler, sent = rank
    sent.clear()
    scheduler.handle(GenerateReqMsg(rid="bias", input_ids=[1, 2], sampling={"max_new_tokens": 2,
                                                                            "logit_bias": {"-99999": 1.0}}))
    scheduler.handle(GenerateReqMsg(rid="tops", input_ids=[1, 2], sampling={"max_new_tokens": 2},
                                    return_logprob=True, top_logprobs_num=5000))
    scheduler.handle(GenerateReqMsg(rid="ids", input_ids=[1, -3], sampling={"max_new_tokens": 2}))
    outs = {o.rid: o for m in sent if isinstance(m, BatchOutMsg) for o in m.outputs}
    for rid, needle in (("bias", "logit_bias"), ("tops", "top_logprobs_num"), ("ids", "outside the vocabulary")):
        assert outs[rid].finished and outs[rid].finish_reason["type"] == "abort"
        assert needle in outs[rid].finish_reason["message"], outs[rid].finish_reason
    assert not scheduler.has_work


def test_a_poisoned_gpu_ends_the_rank_after_failing_the_step(tiny_llama, monkeypatch) -> None:
    """A sticky CUDA error (illegal address, device-side assert) leaves a context where every later launch
    fails: the step's request gets the real reason, then the step raises so the rank exits and the engine
    is restarted, instead of living on and failing every request from then on."""
    import engine.fault_isolation as fault_isolation
    from engine.rank_process import _build

    sent: list[Any] = []
    args = ServerArgs(model_path=tiny_llama, device="cpu", max_total_tokens=4096)
    scheduler, _tp, _info = _build(args, IpcConfig("", "", find_free_port()), 0, sent.append)
    probed: list[Any] = []

    def device_is_broken(device) -> bool:
        probed.append(device)
        return True

    def forward(fb, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(fault_isolation, "device_is_broken", device_is_broken)
    monkeypatch.setattr(scheduler.runner, "forward", forward)
    _submit(scheduler, "culprit", [20, 21, 22])
    with pytest.raises(RuntimeError, match="illegal memory access"):
        for _ in range(10):
            scheduler.step_safely()
    assert probed == [scheduler.runner.device]
    outs = {o.rid: o for m in sent if isinstance(m, BatchOutMsg) for o in m.outputs if o.finished}
    reason = outs["culprit"].finish_reason
    assert reason["type"] == "abort"
    assert "unrecoverable" in reason["message"] and "illegal memory access" in reason["message"]


def test_the_device_probe_passes_on_a_working_device() -> None:
    """Only a device that cannot run a kernel any more is 'broken': the CPU (and a healthy GPU) is not."""
    import torch

    from engine.fault_isolation import device_is_broken

    assert device_is_broken(torch.device("cpu")) is False
    if torch.cuda.is_available():
        assert device_is_broken(torch.device("cuda", 0)) is False


def _tokens_of(rid: str, sent: list[Any]) -> list[int]:
    return [t for m in sent if isinstance(m, BatchOutMsg) for o in m.outputs if o.rid == rid for t in o.new_token_ids]


def _decode_then_submit(scheduler, monkeypatch, late_rid: str) -> None:
    """Overlap on (as on CUDA): 'runner' decodes with a step in flight when `late_rid` arrives, so the late
    prompt's prefill is launched before that decode step is committed (`OverlapMixin._prefill_before_commit`)."""
    monkeypatch.setattr(scheduler, "overlap", True)
    _submit(scheduler, "runner", [30, 31, 32], max_new_tokens=12)
    for _ in range(3):
        scheduler.step_safely()
    assert scheduler._inflight is not None, "the decode step should be in flight"
    _submit(scheduler, late_rid, [40, 41, 42, 43])


def test_a_prefill_launched_before_a_commit_fails_alone(rank, monkeypatch) -> None:
    scheduler, sent = rank
    _submit(scheduler, "runner", [30, 31, 32], max_new_tokens=12)
    _run(scheduler, sent)
    reference = _tokens_of("runner", sent)
    free_before = _free(scheduler)
    real = scheduler.runner.forward

    counts = {"launched": 0, "committed": 0}
    at_prefill: dict[str, int] = {}
    real_commit, real_launch = scheduler._commit, scheduler._launch

    def forward(fb, **kwargs):
        if fb.forward_mode.is_extend and fb.input_ids.tolist() == [40, 41, 42, 43]:
            at_prefill.update(counts)
            raise RuntimeError("injected prefill fault")
        return real(fb, **kwargs)

    def launch(*args, **kwargs):
        counts["launched"] += 1
        return real_launch(*args, **kwargs)

    def commit(inflight):
        counts["committed"] += 1
        return real_commit(inflight)

    monkeypatch.setattr(scheduler.runner, "forward", forward)
    monkeypatch.setattr(scheduler, "_launch", launch)
    monkeypatch.setattr(scheduler, "_commit", commit)
    early_before = scheduler.num_prefills_before_commit
    sent.clear()
    _decode_then_submit(scheduler, monkeypatch, "late")
    before_run = list(sent)
    outs = _run(scheduler, sent)
    assert scheduler.num_prefills_before_commit == early_before  # it raised inside the early launch
    # When the late prompt's prefill was launched, one decode step was still uncommitted (in flight).
    assert at_prefill["launched"] == at_prefill["committed"] + 1, at_prefill
    assert outs["late"].finish_reason["type"] == "abort" and "injected prefill fault" in outs["late"].finish_reason[
        "message"]
    assert outs["runner"].finish_reason == {"type": "length", "length": 12}
    # The decode step in flight was committed before the failure was raised: no token lost or repeated.
    assert _tokens_of("runner", before_run + sent) == reference and len(reference) == 12
    assert _free(scheduler) == free_before


def test_a_commit_failure_behind_an_early_prefill_fails_both_steps_and_serves_on(rank, monkeypatch) -> None:
    scheduler, sent = rank
    free_before = _free(scheduler)
    real = scheduler.stop_checker.check
    armed = {"on": False}

    def check(req):
        if armed["on"] and req.rid == "runner":
            raise RuntimeError("injected commit fault")
        return real(req)

    monkeypatch.setattr(scheduler.stop_checker, "check", check)
    real_prefill = scheduler._prefill_before_commit

    def prefill_then_arm(prev):
        early = real_prefill(prev)
        armed["on"] = early is not None
        return early

    monkeypatch.setattr(scheduler, "_prefill_before_commit", prefill_then_arm)
    _decode_then_submit(scheduler, monkeypatch, "late2")
    outs = _run(scheduler, sent)
    assert outs["runner"].finish_reason["type"] == "abort"
    assert outs["late2"].finish_reason["type"] == "abort"  # its prefill was launched, never read
    monkeypatch.setattr(scheduler, "_prefill_before_commit", real_prefill)
    armed["on"] = False
    _submit(scheduler, "after2", [20, 21, 22])
    assert _run(scheduler, sent)["after2"].finish_reason == {"type": "length", "length": 5}
    assert _free(scheduler) == free_before
