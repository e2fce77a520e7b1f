"""Verification rows as one-token DECODE rows (engine/speculative/batch.py) compute what one EXTEND pass over
the same rows computes: the logits at every drafted position, and each row's last position alone."""

from __future__ import annotations

import torch

from bench.kv_accuracy import Session, build_runner
from engine.forward_batch import ForwardMode
from engine.speculative.batch import TokenRow, build_rows_forward_batch, decode_rows_limit, rows_ends


def test_rows_ends():
    rows = [TokenRow(0, 5, [1, 2, 3]), TokenRow(1, 9, [4]), TokenRow(2, 0, [5, 6])]
    assert rows_ends(rows) == [2, 3, 5]


def test_decode_rows_match_one_extend_pass(tiny_llama):
    runner = build_runner(tiny_llama, "auto", torch.device("cpu"), max_total_tokens=2048, max_running_requests=8)
    assert runner.graph_runner is None and decode_rows_limit(runner) > 0
    session = Session(runner, [[11, 12, 13, 14, 15, 16, 17], [21, 22, 23], [31, 32, 33, 34, 35]])
    session.prefill()
    new_tokens = [[40, 41, 42, 43], [50], [60, 61]]
    rows = []
    for req, toks in zip(session.reqs, new_tokens):
        slots = session.kv.alloc(len(toks))
        runner.req_pool.write(req.req_pool_idx, req.fill_len, slots)
        rows.append(TokenRow(req.req_pool_idx, req.fill_len, toks))
    req_to_token = runner.req_pool.req_to_token
    new_slots = torch.cat([req_to_token[r.pool_row, r.start_pos:r.start_pos + len(r.tokens)] for r in rows]).long()
    pool, cfg = runner.kv_pool, runner.model_config
    zeros = torch.zeros(len(new_slots), runner.num_kv_heads, cfg.head_dim, dtype=cfg.dtype)
    for all_logits in (True, False):
        # The decode pass runs first over cleared slots: its later rows must see the K/V its earlier rows
        # write in the same layer (nothing left behind by another pass).
        for layer in range(cfg.num_layers):
            pool.store(layer, new_slots, zeros, zeros)
        decode = build_rows_forward_batch(rows, req_to_token, runner.device, all_logits=all_logits,
                                          max_decode_rows=decode_rows_limit(runner))
        assert decode.forward_mode == ForwardMode.DECODE and decode.batch_size == 7
        got = runner.forward(decode)
        extend = build_rows_forward_batch(rows, req_to_token, runner.device, all_logits=all_logits)
        assert extend.forward_mode == ForwardMode.EXTEND
        want = runner.forward(extend)
        assert got.shape == want.shape == (7 if all_logits else 3, runner.model_config.vocab_size)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # Beyond the limit the rows stay one EXTEND pass.
    assert build_rows_forward_batch(rows, req_to_token, runner.device, all_logits=True,
                                    max_decode_rows=6).forward_mode == ForwardMode.EXTEND
    session.release()
