"""Per-request checks shared by the API process (which answers a 400 naming the parameter) and the
engine rank (which fails that one request and keeps serving): a request that passes them cannot make
a rank raise on its values.

Everything here is cheap and bounded by the request's own size; nothing depends on engine state
beyond the model's vocabulary size and context length.
"""

from __future__ import annotations

from engine.sampling_params import INT64_MAX, SamplingParams, SamplingParamsError


class RequestCheckError(SamplingParamsError):
    """A request field is invalid for this model; `param` names it as the native API spells it."""


def check_input_ids(input_ids: list[int], vocab_size: int | None, param: str = "input_ids") -> None:
    for tok in input_ids:
        if not isinstance(tok, int) or isinstance(tok, bool):
            raise RequestCheckError(f"{param} must be integer token ids, got {tok!r}", param)
        if tok < 0 or (vocab_size and tok >= vocab_size):
            upper = f"{vocab_size - 1}" if vocab_size else "2^63"
            raise RequestCheckError(f"token id {tok} is outside the vocabulary (0..{upper})", param)


def check_logprob_args(return_logprob: bool, logprob_start_len: int, top_logprobs_num: int, prompt_len: int,
                       vocab_size: int | None) -> None:
    """top_logprobs_num within the vocabulary; logprob_start_len -1 (off) or a prompt position."""
    for name, value in (("logprob_start_len", logprob_start_len), ("top_logprobs_num", top_logprobs_num)):
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) > INT64_MAX:
            raise RequestCheckError(f"{name} must be an integer, got {value!r}", name)
    if top_logprobs_num < 0:
        raise RequestCheckError("top_logprobs_num must be >= 0", "top_logprobs_num")
    if vocab_size and top_logprobs_num > vocab_size:
        raise RequestCheckError(f"top_logprobs_num ({top_logprobs_num}) must not exceed the vocabulary size "
                                f"({vocab_size})", "top_logprobs_num")
    if logprob_start_len < -1:
        raise RequestCheckError(f"logprob_start_len must be -1 (off) or a prompt position, got {logprob_start_len}",
                                "logprob_start_len")
    if return_logprob and logprob_start_len >= prompt_len:
        raise RequestCheckError(f"logprob_start_len ({logprob_start_len}) must be below the prompt length "
                                f"({prompt_len})", "logprob_start_len")


def check_request(input_ids: list[int], sampling: SamplingParams, return_logprob: bool, logprob_start_len: int,
                  top_logprobs_num: int, vocab_size: int | None) -> None:
    """Everything a rank needs to hold before it admits a request; raises RequestCheckError /
    SamplingParamsError naming the first bad field."""
    check_input_ids(input_ids, vocab_size)
    sampling.validate(vocab_size)
    check_logprob_args(return_logprob, logprob_start_len, top_logprobs_num, len(input_ids), vocab_size)
