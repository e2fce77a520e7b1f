"""The host's record of a request's KV slot run (`Req.kv_run`), which lets FlashInfer's dense prefill skip
its device sync: it must never claim a run the row does not hold."""

from __future__ import annotations

import torch

from engine.batch_builder import ScheduleBatch, build_forward_batch
from engine.forward_batch import ForwardMode
from engine.kv_manager import KVManager, extend_slot_run
from engine.mem.kv_pool import KVPool
from engine.mem.req_to_token import ReqToTokenPool
from engine.req import Req
from engine.sampling_params import SamplingParams


def test_extend_slot_run_rules() -> None:
    run = extend_slot_run((0, 0), 0, torch.arange(40, 46))
    assert run == (40, 6)
    assert extend_slot_run(run, 6, torch.arange(46, 50)) == (40, 10)  # continues
    assert extend_slot_run(run, 6, torch.arange(47, 50)) is None  # a gap after the run
    assert extend_slot_run(run, 7, torch.arange(46, 50)) is None  # the row grew by other means
    assert extend_slot_run(None, 0, torch.arange(3)) is None
    assert extend_slot_run((0, 0), 0, torch.tensor([40, 41, 43, 44])) is None  # a gap inside
    assert extend_slot_run((0, 0), 0, torch.tensor([40, 42, 41, 43])) is None  # same ends, not ascending
    assert extend_slot_run((0, 0), 0, torch.tensor([9, 8, 7, 6])) is None  # descending
    assert extend_slot_run(run, 6, torch.empty(0, dtype=torch.int64)) == run


def _manager(size: int = 64, disable_radix: bool = False) -> KVManager:
    pool = KVPool(size, 1, 1, 16, torch.float32, "cpu")
    return KVManager(pool, ReqToTokenPool(4, 64, "cpu"), disable_radix)


def _req(ids: list[int]) -> Req:
    return Req(rid="r", origin_input_ids=ids, sampling=SamplingParams())


def _row(kv: KVManager, req: Req) -> list[int]:
    return kv.req_pool.req_to_token[req.req_pool_idx, :req.kv_len].tolist()


def _extend_step(kv: KVManager, req: Req, n: int) -> int | None:
    """Plans and builds one extend step of n tokens for req alone; returns the batch's kv_run_first."""
    assert kv.extend(req, n) is not None
    req.extend_len = n
    fb = build_forward_batch(ScheduleBatch(ForwardMode.EXTEND, [req]), kv.req_pool, torch.device("cpu"))
    return fb.kv_run_first


def test_chunked_prefill_keeps_the_run_and_the_row_agrees() -> None:
    kv = _manager()
    req = _req(list(range(100, 130)))
    assert kv.admit(req)
    first = _extend_step(kv, req, 10)
    kv.cache_unfinished(req)  # chunk 1 goes into the radix tree; the row is rewritten with the same slots
    assert _extend_step(kv, req, 10) == first
    row = _row(kv, req)
    assert row == list(range(first, first + 20))


def test_run_is_dropped_when_the_slots_are_not_one_run() -> None:
    kv = _manager()
    other = _req([7] * 5)
    assert kv.admit(other) and kv.extend(other, 5) is not None  # takes the next slots in between
    req = _req(list(range(100, 130)))
    assert kv.admit(req)
    assert _extend_step(kv, req, 4) is not None
    kv.extend(other, 1)  # interleaved allocation: req's next slots no longer follow its run
    assert _extend_step(kv, req, 4) is None
    assert req.kv_run is None


def test_cached_prefix_and_duplicates_are_unknown_runs() -> None:
    kv = _manager()
    first = _req(list(range(100, 120)))
    assert kv.admit(first)
    _extend_step(kv, first, 20)
    kv.release(first)
    assert first.kv_run is None
    again = _req(list(range(100, 130)))  # shares a 20-token cached prefix: its slots live on the device
    assert kv.admit(again) and again.kv_len > 0
    assert _extend_step(kv, again, 10) is None


def test_decode_growth_invalidates_the_run() -> None:
    kv = _manager(disable_radix=True)
    req = _req(list(range(100, 110)))
    assert kv.admit(req)
    assert _extend_step(kv, req, 10) is not None
    req.output_ids.append(5)  # sampled by the prefill
    slots = kv.alloc(1)  # a decode step writes its slot without going through extend
    assert int(slots[0]) == req.kv_run[0] + 10  # even a slot that happens to continue the run...
    build_forward_batch(ScheduleBatch(ForwardMode.DECODE, [req], decode_slots=slots), kv.req_pool,
                        torch.device("cpu"))
    req.output_ids.extend([6, 7, 8])  # forced tokens to extend (as a jump-forward does)
    assert _extend_step(kv, req, 3) is None  # ...is not claimed: the record stopped at the prefill
