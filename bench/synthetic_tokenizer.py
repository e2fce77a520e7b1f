"""A byte-level BPE tokenizer of any vocabulary size, built offline in a second.

The config-only model shapes in bench/models/ have no tokenizer, and the device machine cannot
download one; grammar benchmarks still need a vocabulary of the real size (xgrammar's mask cost
grows with it). Merges are drawn from English-like letter pairs, digits, spaces and JSON
punctuation, so the vocabulary has long word-like tokens as well as `",`-style punctuation tokens;
the ids above the regular range are special tokens, with BOS/EOS where the model config puts them.
"""

from __future__ import annotations

import json
import os
import random

_COMMON = "etaoinshrdlucmfwypvbgkjqxz" * 4 + "ETAOINSHRDLU" + "0123456789" * 2 + " " * 12 + '",:{}[]_-.' * 2


def build_tokenizer(out_dir: str, vocab_size: int, bos_id: int, eos_id: int, seed: int = 0) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials_from = min(bos_id, eos_id, vocab_size)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # ByteLevel maps the space to "Ġ"; draw merge pieces through that mapping.
    common = [_to_byte_level(c) for c in _COMMON]
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    rng = random.Random(seed)
    pieces = list(common)
    while len(vocab) < specials_from:
        a = rng.choice(pieces) if rng.random() < 0.7 else rng.choice(common)
        b = rng.choice(common) if rng.random() < 0.8 else rng.choice(pieces)
        new = a + b
        if new in vocab or len(new) > 14:
            continue
        vocab[new] = len(vocab)
        merges.append((a, b))
        pieces.append(new)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [f"<|reserved_{i}|>" for i in range(specials_from, vocab_size)]
    names = {bos_id: "<|begin_of_text|>", eos_id: "<|end_of_text|>"}
    specials = [names.get(i, s) for i, s in zip(range(specials_from, vocab_size), specials)]
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=names[bos_id], eos_token=names[eos_id])
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def _to_byte_level(ch: str) -> str:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(ch)[0][0]


def tokenizer_for(model_path: str, cache_dir: str) -> str | None:
    """None when `model_path` has its own tokenizer, else a synthetic one matching its config."""
    if any(os.path.exists(os.path.join(model_path, f)) for f in ("tokenizer.json", "tokenizer.model")):
        return None
    cfg = json.load(open(os.path.join(model_path, "config.json")))
    eos = cfg.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    out = os.path.join(cache_dir, f"synthetic-{cfg['vocab_size']}")
    if not os.path.exists(os.path.join(out, "tokenizer.json")):
        build_tokenizer(out, cfg["vocab_size"], cfg.get("bos_token_id", eos), eos)
    return out
