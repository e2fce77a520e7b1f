"""The speculative-decoding flags' checks (split from engine.args, which calls them at construction): the
algorithm, the draft length, the n-gram bounds, and a draft model that shares the target's vocabulary."""

from __future__ import annotations

import json
import os
from typing import Any

from engine.args_error import ArgsError

SPECULATIVE_ALGORITHMS = ("draft", "ngram")
MAX_SPECULATIVE_DRAFT_TOKENS = 16


def check_speculative_args(args: Any) -> None:
    """Raises ArgsError (one line) for an invalid speculative setting of `args` (an engine.args.ServerArgs; not
    imported: engine.args imports this module)."""
    algo, draft = args.speculative_algorithm, args.speculative_model
    if algo is not None and algo not in SPECULATIVE_ALGORITHMS:
        raise ArgsError(f"--speculative-algorithm must be one of {', '.join(SPECULATIVE_ALGORITHMS)}, got {algo!r}")
    if not 1 <= args.speculative_num_draft_tokens <= MAX_SPECULATIVE_DRAFT_TOKENS:
        raise ArgsError(f"--speculative-num-draft-tokens must be in 1..{MAX_SPECULATIVE_DRAFT_TOKENS}, "
                        f"got {args.speculative_num_draft_tokens}")
    if not 1 <= args.speculative_ngram_min_match <= args.speculative_ngram_max_match:
        raise ArgsError(f"--speculative-ngram-min-match ({args.speculative_ngram_min_match}) must be >= 1 and "
                        f"<= --speculative-ngram-max-match ({args.speculative_ngram_max_match})")
    if not 0.0 <= args.speculative_min_accept_rate <= 1.0:
        raise ArgsError(f"--speculative-min-accept-rate must be in [0, 1], got {args.speculative_min_accept_rate}")
    if algo == "ngram" and draft:
        raise ArgsError("--speculative-model needs --speculative-algorithm draft (ngram uses no draft model)")
    if args.speculative_mode != "draft":
        return
    if not draft:
        raise ArgsError("--speculative-algorithm draft needs --speculative-model PATH (a draft model sharing "
                        "the target's tokenizer)")
    draft_vocab = _config_vocab_size(draft, "--speculative-model")
    if draft_vocab is None:
        raise ArgsError(f"--speculative-model {draft!r} has no readable config.json")
    target_vocab = _config_vocab_size(args.model_path, "--model-path")
    if target_vocab is not None and target_vocab != draft_vocab:
        raise ArgsError(f"--speculative-model {draft!r} has vocab_size {draft_vocab} but the target model has "
                        f"{target_vocab}; the draft must share the target's tokenizer")


def _config_vocab_size(model_dir: str, flag: str) -> int | None:
    """vocab_size from model_dir/config.json (top level or text_config); None when there is no such file."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise ArgsError(f"{flag}: cannot read {path}: {exc}".splitlines()[0]) from None
    vocab = cfg.get("vocab_size", (cfg.get("text_config") or {}).get("vocab_size"))
    return int(vocab) if isinstance(vocab, int) else None
