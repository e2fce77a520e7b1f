"""Finish checks after each new token: stop token, stop string on the decoded tail, length."""

from __future__ import annotations

from typing import Any

from engine.req import Req


class StopChecker:
    def __init__(self, tokenizer, eos_ids: list[int], context_len: int) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.context_len = context_len

    def check(self, req: Req) -> dict[str, Any] | None:
        sp = req.sampling
        last = req.output_ids[-1]
        num_out = len(req.output_ids)
        if num_out >= sp.min_new_tokens:  # stop tokens are masked before that, see sampler
            if last in sp.stop_token_ids or (not sp.ignore_eos and last in self.eos_ids):
                return {"type": "stop", "matched": last}
        if sp.stop and self.tokenizer is not None:
            matched = self._stop_string(req)
            if matched is not None:
                return {"type": "stop", "matched": matched}
        if num_out >= sp.max_new_tokens:
            return {"type": "length", "length": sp.max_new_tokens}
        if req.fill_len >= self.context_len:
            return {"type": "length", "length": num_out}
        return None

    def _stop_string(self, req: Req) -> str | None:
        # A stop string of n characters spans at most n tokens; a few more absorb partial bytes.
        window = max(len(s) for s in req.sampling.stop) + 4
        tail = self.tokenizer.decode(req.output_ids[-window:], skip_special_tokens=req.sampling.skip_special_tokens)
        for s in req.sampling.stop:
            if s in tail:
                return s
        return None
