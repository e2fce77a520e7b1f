"""Tokenizer loading (HF fast tokenizers only: the engine never runs remote code unless asked)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class TokenizerLoadError(RuntimeError):
    pass


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many types; the operator needs one line
        raise TokenizerLoadError(f"cannot load tokenizer from {path!r}: {exc}".splitlines()[0]) from None
    # The server checks lengths against the context itself (a 400 naming the prompt); transformers' own
    # "sequence length is longer than the specified maximum" warning on every over-long prompt is log noise.
    tokenizer.model_max_length = LARGE_MAX_LENGTH
    return tokenizer


# What HF itself sets when a tokenizer config names no limit.
LARGE_MAX_LENGTH = int(1e30)


def eos_token_ids(tokenizer, hf_config) -> list[int]:
    """EOS ids from generation_config/config (may be a list, as in Llama 3) plus the tokenizer's."""
    ids: list[int] = []
    for src in (getattr(hf_config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if src is None:
            continue
        ids.extend(src if isinstance(src, (list, tuple)) else [src])
    return sorted(set(int(i) for i in ids))
