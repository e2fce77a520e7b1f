"""What a program sees as `s`: ProgramState, the fork group, and the `branch()` context."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lang.errors import LangError
from lang.executor import Executor
from lang.ir import Expr, ExprList, RoleBegin, RoleEnd, as_expr


class ProgramState:
    """The state of one running program: its text, chat messages and named variables."""

    def __init__(self, executor: Executor) -> None:
        self.stream_executor = executor
        self.ret_value: Any = None

    # ---- building -----------------------------------------------------------------------------
    def __iadd__(self, other: Any) -> ProgramState:
        if other is None:
            raise ValueError("tried to add None to a program state")
        self.stream_executor.submit(as_expr(other))
        return self

    def _role(self, role: str, expr: Any = None) -> Any:
        if expr is not None:
            full = ExprList([RoleBegin(role), as_expr(expr), RoleEnd(role)])
            self.stream_executor.submit(full)
            return full

        @contextmanager
        def scope() -> Iterator[None]:
            self.stream_executor.submit(RoleBegin(role))
            yield
            self.stream_executor.submit(RoleEnd(role))

        return scope()

    def system(self, expr: Any = None) -> Any:
        return self._role("system", expr)

    def user(self, expr: Any = None) -> Any:
        return self._role("user", expr)

    def assistant(self, expr: Any = None) -> Any:
        return self._role("assistant", expr)

    # ---- parallelism ----------------------------------------------------------------------------
    def fork(self, size: int = 1, position_ids_offset: Any = None) -> ProgramStateGroup:
        """`size` copies of this state that run concurrently; `group.join()` (or leaving a `with`
        block on the group) gathers their new variables back as lists."""
        if int(size) < 1:
            raise ValueError(f"fork(size) needs size >= 1, got {size}")
        children = self.stream_executor.fork(int(size), precache=int(size) > 1)
        return ProgramStateGroup([ProgramState(c) for c in children], self)

    @contextmanager
    def branch(self) -> Iterator[ProgramState]:
        """`with s.branch() as b:` a concurrent copy of `s`; on exit the variables it created are
        copied into `s` (as plain values) and its text is dropped. Open several to run them together."""
        child = self.stream_executor.fork(1, precache=True)[0]
        state = ProgramState(child)
        try:
            yield state
        finally:
            child.sync()
            src = self.stream_executor
            for name, value in child.variables.items():
                if name not in src.variables or src.variables[name] is not value:
                    src.variables[name] = value
                    if name in child.meta_info:
                        src.meta_info[name] = child.meta_info[name]
            child.end()
        if child.error_ is not None:
            raise child.error_

    copy = branch

    # ---- reading --------------------------------------------------------------------------------
    def text(self) -> str:
        self.stream_executor.sync()
        return self.stream_executor.text_

    def messages(self) -> list[dict[str, Any]]:
        self.stream_executor.sync()
        return self.stream_executor.messages_

    def sync(self) -> None:
        self.stream_executor.sync()

    def error(self) -> BaseException | None:
        self.stream_executor.sync()
        return self.stream_executor.error_

    def get_var(self, name: str) -> Any:
        return self.stream_executor.get_var(name)

    def set_var(self, name: str, value: Any) -> None:
        self.stream_executor.set_var(name, value)

    def get_meta_info(self, name: str) -> Any:
        return self.stream_executor.get_meta_info(name)

    def __getitem__(self, name: str) -> Any:
        return self.get_var(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.set_var(name, value)

    def __contains__(self, name: str) -> bool:
        return name in self.stream_executor.variables

    def text_iter(self, var_name: str | None = None) -> Iterator[str]:
        """Pieces of the text (or of one variable) as they arrive; with `stream=False`, the whole at once."""
        exe = self.stream_executor
        if not exe.stream:
            yield self.text() if var_name is None else self.get_var(var_name)
            return
        prev = 0
        if var_name is None:
            while True:
                exe.text_event.wait()
                exe.text_event.clear()
                out = exe.text_[prev:]
                prev += len(out)
                if out:
                    yield out
                if exe.is_finished:
                    return
        event = exe.stream_events.get(var_name)
        while event is None:  # the program has not reached this gen yet
            if exe.is_finished or exe.error_ is not None:
                if exe.error_ is not None:
                    raise exe.error_
                return
            exe.text_event.wait(0.05)
            exe.text_event.clear()
            event = exe.stream_events.get(var_name)
        while True:
            event.wait()
            event.clear()
            out = str(exe.variables.get(var_name, ""))[prev:]
            prev += len(out)
            if out:
                yield out
            if exe.var_events[var_name].is_set():
                if exe.error_ is not None and var_name not in exe.meta_info:
                    raise exe.error_
                return

    def __repr__(self) -> str:
        return f"ProgramState({self.text()!r})"


class ProgramStateGroup:
    """The states returned by `fork(n)`: index, iterate, `+=` into all, `join()`."""

    def __init__(self, states: list[ProgramState], src_state: ProgramState) -> None:
        self.states = states
        self.src_state = src_state
        self._joined = False

    def join(self, mode: str = "gather_variable") -> None:
        """`gather_variable`: each variable the forks created becomes a list on the source state.
        `concate_and_append`: the forks' new text is appended to the source state, in order."""
        if self._joined:
            return
        src = self.src_state.stream_executor
        if mode == "gather_variable":
            existing = set(src.variables)
            for state in self.states:
                exe = state.stream_executor
                exe.sync()
                for name in exe.variables:
                    if name not in existing:
                        src.variables.setdefault(name, []).append(exe.variables[name])
        elif mode == "concate_and_append":
            pieces = []
            for state in self.states:
                exe = state.stream_executor
                exe.sync()
                pieces.append(exe.text_[exe.fork_start_pos or 0:])
            self.src_state += "".join(pieces)
            src.sync()
        else:
            raise ValueError(f"unknown join mode {mode!r}; use 'gather_variable' or 'concate_and_append'")
        for state in self.states:
            state.stream_executor.end()
        self._joined = True

    def __enter__(self) -> ProgramStateGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.join()

    def __getitem__(self, i: int) -> ProgramState:
        return self.states[i]

    def __iter__(self) -> Iterator[ProgramState]:
        return iter(self.states)

    def __len__(self) -> int:
        return len(self.states)

    def __iadd__(self, other: Any) -> ProgramStateGroup:
        if isinstance(other, (list, tuple)):
            if len(other) != len(self.states):
                raise LangError(f"adding {len(other)} expressions to {len(self.states)} forks")
            for state, item in zip(self.states, other):
                state += item
        elif callable(other) and not isinstance(other, Expr):
            fn: Callable[[int], Any] = other
            for i, state in enumerate(self.states):
                state += fn(i)
        else:
            for state in self.states:
                state += other
        return self


@contextmanager
def branch(state: ProgramState) -> Iterator[ProgramState]:
    """`with lang.branch(s) as b:` is `with s.branch() as b:`."""
    with state.branch() as child:
        yield child
