"""The expression builders and module-level helpers of the language (SGLang's names and arguments)."""

from __future__ import annotations

import json
import re
from typing import Any

from lang.choices import resolve_method
from lang.ir import ExprList, Gen, RoleBegin, RoleEnd, SamplingParams, Select, as_expr
from lang.program import _backend, defaults


def set_default_backend(backend: Any) -> None:
    defaults.backend = backend


def flush_cache(backend: Any = None) -> Any:
    return _backend(backend).flush_cache()


def get_server_info(backend: Any = None) -> Any:
    return _backend(backend).get_server_info()


def _check_regex(regex: str | None) -> None:
    if regex is None:
        return
    try:
        re.compile(regex)
    except re.error as exc:
        raise ValueError(f"gen(): invalid regex {regex!r}: {exc}") from None


def gen(name: str | None = None, max_tokens: int | None = None, min_tokens: int | None = None, n: int | None = None,
        stop: str | list[str] | None = None, stop_token_ids: list[int] | None = None,
        stop_regex: str | list[str] | None = None, temperature: float | None = None, top_p: float | None = None,
        top_k: int | None = None, min_p: float | None = None, frequency_penalty: float | None = None,
        presence_penalty: float | None = None, ignore_eos: bool | None = None, return_logprob: bool | None = None,
        logprob_start_len: int | None = None, top_logprobs_num: int | None = None,
        return_text_in_logprobs: bool | None = None, dtype: Any = None, choices: list[str] | None = None,
        choices_method: Any = None, regex: str | None = None, json_schema: str | dict | None = None,
        max_new_tokens: int | None = None) -> Gen | Select:
    """Generates text into variable `name`. With `choices`, it is `select`. `max_new_tokens` is an
    alias of `max_tokens`; `json_schema` may be a dict."""
    if choices is not None:
        constrained = [k for k, v in (("regex", regex), ("json_schema", json_schema), ("dtype", dtype)) if v is not None]
        if constrained:
            raise ValueError(f"gen(): 'choices' cannot be combined with {', '.join(repr(k) for k in constrained)}; "
                             "give one way to constrain the output")
        return select(name, choices, 0.0 if temperature is None else temperature, choices_method)
    if choices_method is not None:
        raise ValueError("gen(): 'choices_method' needs 'choices'")
    if regex is not None and json_schema is not None:
        raise ValueError("gen(): give 'regex' or 'json_schema', not both")
    if max_tokens is not None and max_new_tokens is not None and max_tokens != max_new_tokens:
        raise ValueError("gen(): 'max_tokens' and 'max_new_tokens' are the same setting; give one")
    _check_regex(regex)
    if isinstance(json_schema, dict):
        json_schema = json.dumps(json_schema)
    return Gen(name, SamplingParams(
        max_new_tokens=max_tokens if max_tokens is not None else max_new_tokens, min_new_tokens=min_tokens, n=n,
        stop=stop, stop_token_ids=stop_token_ids, stop_regex=stop_regex, temperature=temperature, top_p=top_p,
        top_k=top_k, min_p=min_p, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
        ignore_eos=ignore_eos, return_logprob=return_logprob, logprob_start_len=logprob_start_len,
        top_logprobs_num=top_logprobs_num, return_text_in_logprobs=return_text_in_logprobs, dtype=dtype,
        regex=regex, json_schema=json_schema))


def gen_int(name: str | None = None, **kwargs: Any) -> Gen:
    """An integer (a regex on the server), stopping at a space or newline."""
    if {"regex", "json_schema", "choices", "dtype"} & kwargs.keys():
        raise ValueError("gen_int(): the output is constrained to an integer already")
    return gen(name, dtype=int, **kwargs)  # type: ignore[return-value]


def gen_string(name: str | None = None, **kwargs: Any) -> Gen:
    """A double-quoted string of word characters and spaces (a regex on the server)."""
    if {"regex", "json_schema", "choices", "dtype"} & kwargs.keys():
        raise ValueError("gen_string(): the output is constrained to a string already")
    return gen(name, dtype=str, **kwargs)  # type: ignore[return-value]


def select(name: str | None = None, choices: list[str] | None = None, temperature: float = 0.0,
           choices_method: Any = None) -> Select:
    """Picks one of `choices` by its logprob after the current text (one request per choice set)."""
    if not choices or not all(isinstance(c, str) for c in choices):
        raise ValueError("select(): 'choices' must be a non-empty list of strings")
    return Select(name, list(choices), temperature, resolve_method(choices_method))


def _role(role: str, expr: Any = None) -> ExprList:
    inner = [] if expr is None else [as_expr(expr)]
    return ExprList([RoleBegin(role), *inner, RoleEnd(role)])


def system(expr: Any = None) -> ExprList:
    return _role("system", expr)


def user(expr: Any = None) -> ExprList:
    return _role("user", expr)


def assistant(expr: Any = None) -> ExprList:
    return _role("assistant", expr)


def system_begin() -> RoleBegin:
    return RoleBegin("system")


def system_end() -> RoleEnd:
    return RoleEnd("system")


def user_begin() -> RoleBegin:
    return RoleBegin("user")


def user_end() -> RoleEnd:
    return RoleEnd("user")


def assistant_begin() -> RoleBegin:
    return RoleBegin("assistant")


def assistant_end() -> RoleEnd:
    return RoleEnd("assistant")
