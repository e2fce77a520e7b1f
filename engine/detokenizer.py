"""Incremental, UTF-8-safe detokenization and stop-string helpers.

Decoding token by token breaks multi-byte characters that span tokens; we decode a small window
(`prefix_offset`..end) and only emit text once it no longer ends in a replacement character.
"""

from __future__ import annotations

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.token_ids: list[int] = []
        self.text = ""
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, new_ids: list[int], is_final: bool = False) -> str:
        """Appends tokens; returns the full text decoded so far (stable prefix only unless final)."""
        self.token_ids.extend(new_ids)
        prefix_text = self._decode(self.token_ids[self._prefix_offset:self._read_offset])
        window_text = self._decode(self.token_ids[self._prefix_offset:])
        complete = not window_text.endswith(REPLACEMENT_CHAR)
        if (complete or is_final) and len(window_text) > len(prefix_text):
            # window_text extends prefix_text; anything past it is new, finished text.
            self.text += window_text[len(prefix_text):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.token_ids)
        return self.text


def trim_stop_string(text: str, stop: list[str]) -> tuple[str, str | None]:
    """Cuts `text` at the first occurrence of any stop string; returns (text, matched or None)."""
    best: tuple[int, str] | None = None
    for s in stop:
        idx = text.find(s)
        if idx != -1 and (best is None or idx < best[0]):
            best = (idx, s)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def hold_back_partial_stop(text: str, stop: list[str]) -> str:
    """While streaming, hides a tail that could still grow into a stop string."""
    cut = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                cut = max(cut, k)
                break
    return text[: len(text) - cut] if cut else text
