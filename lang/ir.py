"""The expressions a program adds to its state: text, gen, select, role markers, lists of them."""

from __future__ import annotations

import dataclasses
from typing import Any

from lang.choices import ChoicesMethod

# gen_int / gen_string constrain through a regex on the server, as SGLang's frontend does.
REGEX_INT = r"[-+]?[0-9]+[ \n]*"
REGEX_FLOAT = r"[-+]?[0-9]*\.?[0-9]+[ \n]*"
REGEX_BOOL = r"(True|False)"
REGEX_STR = r"\"[\w\d\s]*\""


@dataclasses.dataclass
class SamplingParams:
    """Sampling parameters; `None` means "inherit from run()" (gen) or "server default" (run)."""

    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    stop_regex: str | list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    ignore_eos: bool | None = None
    return_logprob: bool | None = None
    logprob_start_len: int | None = None
    top_logprobs_num: int | None = None
    return_text_in_logprobs: bool | None = None
    dtype: Any = None
    regex: str | None = None
    json_schema: str | None = None

    def merged_over(self, base: SamplingParams) -> SamplingParams:
        """`self`'s set fields over `base` (gen's arguments over run()'s)."""
        out = dataclasses.replace(base)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(out, f.name, value)
        return out

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def resolve_dtype(self) -> SamplingParams:
        """gen_int / gen_string: the dtype becomes a regex (and stops at whitespace for numbers)."""
        if self.dtype is None:
            return self
        table = {int: REGEX_INT, "int": REGEX_INT, float: REGEX_FLOAT, "float": REGEX_FLOAT,
                 str: REGEX_STR, "str": REGEX_STR, bool: REGEX_BOOL, "bool": REGEX_BOOL}
        if self.dtype not in table:
            raise ValueError(f"gen(): dtype must be int, float, str or bool, got {self.dtype!r}")
        out = dataclasses.replace(self, regex=table[self.dtype], dtype=None)
        if self.dtype in (int, "int", float, "float"):
            out.stop = [*self.stop_list(), " ", "\n"]
        return out


class Expr:
    """Something a program adds to its state with `s += ...`; `+` builds a list of expressions."""

    def __add__(self, other: Any) -> ExprList:
        return ExprList([*_flatten(self), *_flatten(as_expr(other))])

    def __radd__(self, other: Any) -> ExprList:
        return ExprList([*_flatten(as_expr(other)), *_flatten(self)])


def _flatten(expr: Expr) -> list[Expr]:
    return list(expr.items) if isinstance(expr, ExprList) else [expr]


def as_expr(value: Any) -> Expr:
    if isinstance(value, Expr):
        return value
    if isinstance(value, str):
        return Text(value)
    raise TypeError(f"cannot add a {type(value).__name__} to a program state; use str, gen(), select() or a role")


class ExprList(Expr):
    def __init__(self, items: list[Expr]) -> None:
        self.items = items

    def __repr__(self) -> str:
        return f"ExprList({self.items!r})"


class Text(Expr):
    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Text({self.value!r})"


class Gen(Expr):
    def __init__(self, name: str | None, params: SamplingParams) -> None:
        self.name = name
        self.params = params

    def __repr__(self) -> str:
        return f"Gen({self.name!r})"


class Select(Expr):
    def __init__(self, name: str | None, choices: list[str], temperature: float, method: ChoicesMethod) -> None:
        self.name = name
        self.choices = choices
        self.temperature = temperature
        self.method = method

    def __repr__(self) -> str:
        return f"Select({self.name!r}, {self.choices!r})"


class RoleBegin(Expr):
    def __init__(self, role: str) -> None:
        self.role = role


class RoleEnd(Expr):
    def __init__(self, role: str) -> None:
        self.role = role


def named_vars(expr: Expr) -> list[str]:
    """The variable names an expression will set (so readers can wait for them)."""
    if isinstance(expr, (Gen, Select)) and expr.name is not None:
        return [expr.name]
    if isinstance(expr, ExprList):
        return [n for item in expr.items for n in named_vars(item)]
    return []
