"""`@function` programs: run one, or run a batch on a thread pool with a progress bar."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lang.errors import LangError
from lang.executor import Executor
from lang.ir import SamplingParams
from lang.state import ProgramState
from lang.tracer import constant_prefix


class _Defaults:
    """Process-wide settings: the default backend (`set_default_backend`)."""

    backend: Any = None
    # run_batch prefills a constant prefix shared by all programs once it is at least this long.
    min_precache_chars = 64


defaults = _Defaults()


def _run_params(max_new_tokens: int = 128, min_new_tokens: int = 0, n: int = 1, stop: Any = None,
                stop_token_ids: Any = None, stop_regex: Any = None, temperature: float = 1.0, top_p: float = 1.0,
                top_k: int = -1, min_p: float = 0.0, frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                ignore_eos: bool = False, return_logprob: bool | None = None, logprob_start_len: int | None = None,
                top_logprobs_num: int | None = None, return_text_in_logprobs: bool | None = None) -> SamplingParams:
    # The same defaults as SGLang's frontend, so a program behaves the same after the import change.
    return SamplingParams(max_new_tokens, min_new_tokens, n, stop if stop is not None else [],
                          stop_token_ids if stop_token_ids is not None else [],
                          stop_regex if stop_regex is not None else [], temperature, top_p, top_k, min_p,
                          frequency_penalty, presence_penalty, ignore_eos, return_logprob, logprob_start_len,
                          top_logprobs_num, return_text_in_logprobs)


def _backend(backend: Any) -> Any:
    backend = backend or defaults.backend
    if backend is None:
        raise LangError("no backend: call lang.set_default_backend(lang.RuntimeEndpoint(url)) or pass backend=")
    return backend


class SglFunction:
    """A program: a Python function whose first argument is the state `s`."""

    def __init__(self, func: Any, num_api_spec_tokens: int | None = None, bind_arguments: dict | None = None) -> None:
        self.func = func
        self.num_api_spec_tokens = num_api_spec_tokens
        self.bind_arguments = dict(bind_arguments or {})
        spec = inspect.getfullargspec(func)
        if not spec.args or spec.args[0] != "s":
            raise LangError(f"@function {func.__name__}: the first argument must be named 's'")
        self.arg_names = spec.args[1:]
        self.arg_defaults = spec.defaults or ()

    def bind(self, **kwargs: Any) -> SglFunction:
        unknown = set(kwargs) - set(self.arg_names)
        if unknown:
            raise LangError(f"{self.func.__name__}() has no argument(s) {', '.join(sorted(unknown))}")
        return SglFunction(self.func, self.num_api_spec_tokens, {**self.bind_arguments, **kwargs})

    def __call__(self, *args: Any, **kwargs: Any) -> ProgramState:
        return self.run(*args, **kwargs)

    def run(self, *args: Any, stream: bool = False, backend: Any = None, use_thread: bool = True,
            **kwargs: Any) -> ProgramState:
        """Runs the program; returns its state (with `stream=True` at once, while it runs)."""
        params, program_kwargs = _split_kwargs(kwargs)
        return self._start(_backend(backend), args, {**program_kwargs, **self.bind_arguments},
                           _run_params(**params), stream)

    def _start(self, backend: Any, args: tuple, kwargs: dict[str, Any], params: SamplingParams,
               stream: bool) -> ProgramState:
        state = ProgramState(Executor(backend, params, stream))
        if stream:
            threading.Thread(target=self._execute, args=(state, args, kwargs), daemon=True, name="lang-program").start()
        else:
            self._execute(state, args, kwargs)
        return state

    def _execute(self, state: ProgramState, args: tuple, kwargs: dict[str, Any]) -> None:
        exe = state.stream_executor
        try:
            state.ret_value = self.func(state, *args, **kwargs)
        except BaseException as exc:
            if exe.stream:  # nobody to raise to: report through error() and wake readers
                exe.error_ = exe.error_ or exc
                exe._wake_all()
            else:
                raise
        finally:
            exe.end()
        if not exe.stream:
            exe.sync()

    def run_batch(self, batch_kwargs: list[Any], *, backend: Any = None, num_threads: int | str = "auto",
                  progress_bar: bool = False, generator_style: bool = False, **kwargs: Any) -> Any:
        """Runs the program once per argument dict (or tuple), `num_threads` at a time, in order."""
        if kwargs.keys() - _PARAM_NAMES:
            raise LangError(f"run_batch() got unknown argument(s): {', '.join(sorted(kwargs.keys() - _PARAM_NAMES))}")
        backend = _backend(backend)
        batch = [self._as_kwargs(item) for item in batch_kwargs]
        if not batch:
            return []
        params = _run_params(**kwargs)
        if len(batch) > 1:
            prefix = constant_prefix(self.func, self.arg_names, self.bind_arguments, backend)
            if len(prefix) >= defaults.min_precache_chars:
                backend.cache_prefix(prefix)
        if num_threads == "auto":
            num_threads = max(96, (os.cpu_count() or 1) * 16)
        if not isinstance(num_threads, int) or num_threads < 1:
            raise LangError(f"num_threads must be 'auto' or a positive int, got {num_threads!r}")
        gen = self._batch_iter(backend, batch, params, min(num_threads, len(batch)), progress_bar)
        return gen if generator_style else list(gen)

    def _as_kwargs(self, item: Any) -> dict[str, Any]:
        if isinstance(item, dict):
            return {**item, **self.bind_arguments}
        if isinstance(item, (list, tuple)) and len(self.arg_names) - len(self.arg_defaults) <= len(item) <= len(self.arg_names):
            return {**dict(zip(self.arg_names, item)), **self.bind_arguments}
        raise LangError(f"run_batch(): {item!r} does not match the arguments of {self.func.__name__}{tuple(self.arg_names)}")

    def _batch_iter(self, backend: Any, batch: list[dict[str, Any]], params: SamplingParams, num_threads: int,
                    progress_bar: bool) -> Iterator[ProgramState]:
        bar = None
        if progress_bar:
            import tqdm  # only when asked: keeps `import lang` light

            bar = tqdm.tqdm(total=len(batch), desc=self.func.__name__, unit="program")
        try:
            with ThreadPoolExecutor(num_threads, thread_name_prefix="lang-batch") as pool:
                futures = [pool.submit(self._start, backend, (), kw, params, False) for kw in batch]
                if bar is not None:
                    for f in futures:
                        f.add_done_callback(lambda _f: bar.update())
                for f in futures:
                    yield f.result()
        finally:
            if bar is not None:
                bar.close()


_PARAM_NAMES = set(inspect.signature(_run_params).parameters)


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    params = {k: v for k, v in kwargs.items() if k in _PARAM_NAMES}
    return params, {k: v for k, v in kwargs.items() if k not in _PARAM_NAMES}


def function(func: Any = None, num_api_spec_tokens: int | None = None) -> Any:
    """`@function` or `@function(num_api_spec_tokens=...)` (accepted for compatibility, unused)."""
    if func is not None:
        return SglFunction(func, num_api_spec_tokens)
    return lambda f: SglFunction(f, num_api_spec_tokens)
