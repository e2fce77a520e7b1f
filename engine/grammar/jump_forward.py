"""Jump-forward decoding (the "compressed finite-state machine" of the SGLang paper).

When the grammar admits exactly one continuation string after the token just sampled (a JSON
key, `": "`, a closing brace, ...), decoding it token by token wastes a forward step per token.
Instead the string is appended at once and computed in one extend step. The tokens are not the
grammar's own split of the string: the last sampled token and the forced string are re-tokenized
together with the model's tokenizer, so the sequence stays what the tokenizer would produce and
the model sees canonical input; the matcher replays the new tokens and, should the grammar refuse
that tokenization, the jump is dropped.

Requests that return logprobs or have stop strings do not jump (jumped tokens have no sampled
logprob, and a stop string could hide inside the forced text).
"""

from __future__ import annotations

from typing import Any

from engine.req import Req


class JumpForward:
    def __init__(self, tokenizer: Any, context_len: int) -> None:
        self.tokenizer = tokenizer
        self.context_len = context_len
        self.num_events = 0
        self.num_tokens = 0

    def apply(self, req: Req) -> bool:
        """Replaces req's last output token with the re-tokenized `last + forced` text; True if it did."""
        sp = req.sampling
        if self.tokenizer is None or req.return_logprob or sp.stop:
            return False
        matcher = req.grammar.matcher
        forced = matcher.find_jump_forward_string()
        if not forced:
            return False
        last = req.output_ids[-1]
        head = self.tokenizer.decode([last])
        if "\ufffd" in head:  # the token ends inside a UTF-8 character: no clean text boundary
            return False
        text = head + forced
        new_ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        if self.tokenizer.decode(new_ids) != text:
            return False
        # Leave room for the token sampled after the jump, within max_new_tokens and the context.
        before = len(req.output_ids) - 1
        room = min(sp.max_new_tokens - before - 1, self.context_len - (req.fill_len - 1) - 1)
        new_ids = new_ids[:room]
        if len(new_ids) <= 1:
            return False
        matcher.rollback(1)
        accepted = 0
        for tok in new_ids:
            if not matcher.accept_token(tok):
                break
            accepted += 1
        if accepted < len(new_ids):
            if accepted:
                matcher.rollback(accepted)
            matcher.accept_token(last)
            return False
        req.output_ids[-1:] = new_ids
        self.num_events += 1
        self.num_tokens += len(new_ids) - 1  # net tokens gained without a decode step
        return True
