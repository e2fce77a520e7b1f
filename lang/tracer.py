"""Finds the constant text a program starts with (before any argument or generation), so run_batch
can prefill it once for every program (SGLang's `max_new_tokens: 0` pre-caching)."""

from __future__ import annotations

from typing import Any

from lang.ir import ExprList, RoleBegin, RoleEnd, Text, as_expr


class _Stop(Exception):
    pass


class _Arg:
    """Stands for an argument: any use of its value ends the trace."""

    def _stop(self, *args: Any, **kwargs: Any) -> Any:
        raise _Stop

    __add__ = __radd__ = __str__ = __format__ = __len__ = __iter__ = __getitem__ = __bool__ = _stop
    __int__ = __float__ = __eq__ = __lt__ = __contains__ = __call__ = _stop
    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        raise _Stop


class _TraceState:
    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.text = ""
        self.messages: list[dict[str, Any]] = []

    def __iadd__(self, other: Any) -> _TraceState:
        self._add(as_expr(other) if not isinstance(other, _Arg) else other)
        return self

    def _add(self, expr: Any) -> None:
        if isinstance(expr, Text):
            self.text += expr.value
        elif isinstance(expr, ExprList):
            for item in expr.items:
                self._add(item)
        elif isinstance(expr, RoleBegin):
            prefix, _ = self.backend.get_chat_template().get_prefix_and_suffix(expr.role, self.messages)
            self.text += prefix
        elif isinstance(expr, RoleEnd):
            raise _Stop  # the suffix follows content we cannot know
        else:
            raise _Stop

    def __getattr__(self, name: str) -> Any:
        raise _Stop


def constant_prefix(func: Any, arg_names: list[str], bound: dict[str, Any], backend: Any) -> str:
    state = _TraceState(backend)
    kwargs = {name: bound.get(name, _Arg()) for name in arg_names}
    try:
        func(state, **kwargs)
    except Exception:  # noqa: BLE001 - any use of an unknown value ends the constant prefix
        pass
    return state.text
