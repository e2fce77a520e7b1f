"""Executes one program state's expressions, in order, on its own worker thread.

Each state (the root of a run, every fork, every branch) has one worker: `s += gen(...)` returns at
once and the request runs in the background, so forks filled in a `for` loop run concurrently.
Reading a variable (`s["x"]`), `text()` or `sync()` waits for the work it depends on. A failure stops
the state: later expressions are skipped, waiters wake, and `error()` returns the exception.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from lang.chat_template import ChatTemplate
from lang.errors import LangError
from lang.ir import Expr, ExprList, Gen, RoleBegin, RoleEnd, SamplingParams, Select, Text, named_vars


class Executor:
    def __init__(self, backend: Any, default_params: SamplingParams, stream: bool,
                 chat_template: ChatTemplate | None = None) -> None:
        self.backend = backend
        self.default_params = default_params
        self.stream = stream
        self.chat_template = chat_template or backend.get_chat_template()
        self.text_ = ""
        self.messages_: list[dict[str, Any]] = []
        self.variables: dict[str, Any] = {}
        self.meta_info: dict[str, Any] = {}
        self.var_events: dict[str, threading.Event] = {}
        self.stream_events: dict[str, threading.Event] = {}
        self.text_event = threading.Event()  # any progress (streaming text_iter without a variable)
        self.cur_role: str | None = None
        self.cur_role_begin_pos = 0
        self.fork_start_pos: int | None = None
        self.error_: BaseException | None = None
        self.is_finished = False
        # A lower bound on the token count of a prefix of text_: (prompt text, its prompt_tokens). `select`
        # asks for logprobs from just before the choices instead of over the whole prompt.
        self.known_prefix: tuple[str, int] = ("", 0)
        self.precached_text: str | None = None
        self.children: list[Executor] = []
        self._queue: queue.Queue[Expr | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ended = False

    # ---- scheduling -------------------------------------------------------------------------
    def submit(self, expr: Expr) -> None:
        for name in named_vars(expr):
            self.var_events[name] = threading.Event()
            if self.stream:
                self.stream_events[name] = threading.Event()
        with self._lock:
            if self._ended:
                raise LangError("this program state has ended (a fork that was joined, or a finished run)")
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, daemon=True, name="lang-state")
                self._worker.start()
        self._queue.put(expr)

    def _work(self) -> None:
        while True:
            expr = self._queue.get()
            if expr is None:
                self._queue.task_done()
                break
            if self.error_ is None:
                try:
                    self.execute(expr)
                except BaseException as exc:  # noqa: BLE001 - surfaced through error() and variable reads
                    self.error_ = exc
            if self.error_ is not None:
                self._wake_all()
            self._queue.task_done()
            self.text_event.set()
        self.is_finished = True
        self.text_event.set()

    def _wake_all(self) -> None:
        for event in (*self.var_events.values(), *self.stream_events.values()):
            event.set()

    def sync(self) -> None:
        if self._worker is not None:
            self._queue.join()

    def end(self) -> None:
        """No more expressions: the worker finishes what is queued and exits (children too)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if self._worker is not None:
                self._queue.put(None)
            else:
                self.is_finished = True
                self.text_event.set()
        for child in self.children:
            child.end()

    # ---- variables --------------------------------------------------------------------------
    def get_var(self, name: str) -> Any:
        event = self.var_events.get(name)
        if event is not None:
            event.wait()
        if name in self.variables:
            return self.variables[name]
        if self.error_ is not None:
            raise self.error_
        raise KeyError(f"the program has no variable {name!r} (known: {', '.join(map(str, self.variables)) or 'none'})")

    def set_var(self, name: str, value: Any) -> None:
        self.variables[name] = value

    def get_meta_info(self, name: str) -> Any:
        event = self.var_events.get(name)
        if event is not None:
            event.wait()
        return self.meta_info.get(name)

    def note_prompt(self, text: str, prompt_tokens: Any) -> None:
        if isinstance(prompt_tokens, int) and len(text) >= len(self.known_prefix[0]):
            self.known_prefix = (text, prompt_tokens)

    def token_lower_bound(self) -> int:
        """Tokens surely before the end of text_ (a retokenized boundary may merge a couple)."""
        text, count = self.known_prefix
        return max(count - 2, 0) if text and self.text_.startswith(text) else 0

    # ---- forks --------------------------------------------------------------------------------
    def fork(self, size: int, precache: bool) -> list[Executor]:
        self.sync()
        if self.error_ is not None:
            raise self.error_
        if precache and self.text_ and self.text_ != self.precached_text:
            # One prefill of the shared prefix, so every branch finds it in the radix cache.
            self.backend.cache_prefix(self.text_)
            self.precached_text = self.text_
        children = []
        for _ in range(int(size)):
            child = Executor(self.backend, self.default_params, self.stream, self.chat_template)
            child.variables = dict(self.variables)
            child.meta_info = dict(self.meta_info)
            child.text_ = self.text_
            child.messages_ = list(self.messages_)
            child.cur_role, child.cur_role_begin_pos = self.cur_role, self.cur_role_begin_pos
            child.fork_start_pos = len(self.text_)
            child.known_prefix = self.known_prefix
            child.precached_text = self.precached_text
            children.append(child)
        self.children.extend(children)
        return children

    # ---- execution ----------------------------------------------------------------------------
    def execute(self, expr: Expr) -> None:
        if isinstance(expr, Text):
            self.text_ += expr.value
        elif isinstance(expr, ExprList):
            for item in expr.items:
                self.execute(item)
        elif isinstance(expr, Gen):
            self._gen(expr)
        elif isinstance(expr, Select):
            self._select(expr)
        elif isinstance(expr, RoleBegin):
            self._role_begin(expr.role)
        elif isinstance(expr, RoleEnd):
            self._role_end(expr.role)
        else:
            raise LangError(f"cannot execute {expr!r}")

    def resolve_params(self, params: SamplingParams) -> SamplingParams:
        out = params.merged_over(self.default_params).resolve_dtype()
        if self.chat_template.stop_str:
            out.stop = [*out.stop_list(), *self.chat_template.stop_str]
        return out

    def _set(self, name: str | None, value: Any, meta: Any) -> None:
        if name is None:
            return
        self.variables[name] = value
        self.meta_info[name] = meta
        self.var_events[name].set()
        if name in self.stream_events:
            self.stream_events[name].set()

    def _gen(self, expr: Gen) -> None:
        params = self.resolve_params(expr.params)
        if not self.stream:
            comp, meta = self.backend.generate(self, params)
            self.text_ += comp[0] if isinstance(comp, list) else comp
            self._set(expr.name, comp, meta)
            return
        name = expr.name
        if name is not None:
            self.variables[name] = ""
        for piece, meta in self.backend.generate_stream(self, params):
            self.text_ += piece
            if name is not None:
                self.variables[name] += piece
                self.meta_info[name] = meta
                self.stream_events[name].set()
            self.text_event.set()
        if name is not None:
            self._set(name, self.variables[name], self.meta_info.get(name))

    def _select(self, expr: Select) -> None:
        if expr.temperature > 1e-5:
            raise LangError(f"select() picks greedily from prompt logprobs; temperature must be 0, got {expr.temperature}")
        decision = self.backend.select(self, expr.choices, expr.temperature, expr.method)
        self.text_ += decision.decision
        self._set(expr.name, decision.decision, decision.meta_info)

    def _role_begin(self, role: str) -> None:
        if self.cur_role is not None:
            raise LangError(f"cannot open a {role!r} turn inside the open {self.cur_role!r} turn (roles do not nest)")
        if not self.messages_ and role != "system" and self.chat_template.default_system_prompt:
            self._role_begin("system")
            self.text_ += self.chat_template.default_system_prompt
            self._role_end("system")
        prefix, _ = self.chat_template.get_prefix_and_suffix(role, self.messages_)
        self.cur_role = role
        self.text_ += prefix
        self.cur_role_begin_pos = len(self.text_)

    def _role_end(self, role: str) -> None:
        if self.cur_role != role:
            raise LangError(f"{role}_end() without a matching {role}_begin()")
        content = self.text_[self.cur_role_begin_pos:].lstrip()
        _, suffix = self.chat_template.get_prefix_and_suffix(role, self.messages_)
        self.text_ += suffix
        self.cur_role = None
        self.messages_.append({"role": role, "content": content})
