"""A real 131 K production vocabulary for grammar benchmarks: Mistral's Tekken tokenizer as an HF
tokenizer directory.

Grammar mask cost depends on the vocabulary's structure, not only its size: a real BPE vocabulary's
pre-tokenizer keeps tokens from straddling JSON punctuation and words, so most tokens are decided
by the grammar's state without a runtime check. The synthetic vocabulary (synthetic_tokenizer.py)
glues letters and punctuation freely and inflates the per-step fill cost (measured on CPU: p90
32.9 ms vs 1.2 ms for 64 rows). Model weights cannot be downloaded here, but the `mistral-common`
wheel on PyPI ships `tekken_240911.json` (Mistral NeMo's tokenizer, 131,072 ids), so benchmarks can
use a tokenizer of the same family and size as Llama-3's 128 K.

Token ids differ from Mistral's (regular tokens first, then the 1,000 special tokens): mask cost
does not depend on the numbering.

    pip download --no-deps mistral-common && unzip -j mistral_common-*.whl '*/tekken_240911.json'
    python bench/tekken_tokenizer.py tekken_240911.json /tmp/tekken-hf
"""

from __future__ import annotations

import base64
import json
import os
import sys

NUM_SPECIAL = 1000
BOS, EOS = "<s>", "</s>"


def _byte_level_table() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    table = bytes_to_unicode()
    return [table[b] for b in range(256)]


def build(tekken_json: str, out_dir: str) -> str:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    data = json.load(open(tekken_json))
    cfg = data["config"]
    ranked = [base64.b64decode(t["token_bytes"]) for t in data["vocab"][: cfg["default_vocab_size"] - NUM_SPECIAL]]
    rank = {tok: i for i, tok in enumerate(ranked)}
    # tiktoken-style ranks to BPE merges: a token of rank r is the merge of any split whose two
    # halves are tokens; merges are ordered by the merged token's rank, as tiktoken applies them.
    merges = []
    for tok, r in rank.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in rank and right in rank:
                merges.append((r, rank[left], rank[right], left, right))
    merges.sort()
    table = _byte_level_table()

    def byte_level(raw: bytes) -> str:
        return "".join(table[b] for b in raw)

    vocab = {byte_level(tok): i for tok, i in rank.items()}
    model = BPE(vocab, [(byte_level(a), byte_level(b)) for *_, a, b in merges], fuse_unk=False,
                ignore_merges=True)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(cfg["pattern"]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", BOS, EOS] + [f"<SPECIAL_{i}>" for i in range(3, NUM_SPECIAL)]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token="<unk>")
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def model_dir_for(model_path: str, tokenizer_path: str, cache_dir: str) -> str:
    """`model_path`'s config with the vocabulary size and BOS/EOS of `tokenizer_path` (dummy weights
    only: the LM head and embedding take the tokenizer's width)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    cfg = json.load(open(os.path.join(model_path, "config.json")))
    if cfg["vocab_size"] == len(tok):
        return model_path
    cfg.update(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    out = os.path.join(cache_dir, f"{os.path.basename(model_path.rstrip('/'))}-vocab{len(tok)}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: tekken_tokenizer.py TEKKEN_JSON OUT_DIR")
    print(build(sys.argv[1], sys.argv[2]))
