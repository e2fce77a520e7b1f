"""CompileService: one compile per (kind, spec), failures cached too, compiles off the caller's thread."""

from __future__ import annotations

import threading
import time

import pytest

from engine.grammar.compile_service import CompileService
from engine.grammar.spec_check import GrammarSpecError


class FakeBackend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.gate = threading.Event()

    def compile(self, kind: str, spec: str) -> str:
        self.calls.append((kind, spec))
        if spec == "slow":
            self.gate.wait(10)
        if spec == "bad":
            raise GrammarSpecError("invalid regex: nope", kind)
        return f"compiled:{spec}"


def test_cache_hits_failures_and_no_blocking():
    backend = FakeBackend()
    service = CompileService(lambda: backend, num_workers=2)
    slow = service.submit("regex", "slow")
    start = time.perf_counter()
    ok = service.submit("regex", "a+")
    assert ok.result(timeout=5) == "compiled:a+"
    assert time.perf_counter() - start < 2 and not slow.done()  # a second worker took it
    bad1 = service.submit("regex", "bad")
    with pytest.raises(GrammarSpecError):
        bad1.result(timeout=5)
    assert service.submit("regex", "bad") is bad1  # the failure is cached, not recompiled
    assert service.submit("regex", "a+") is ok
    assert service.submit("ebnf", "a+") is not ok  # the kind is part of the key
    backend.gate.set()
    assert slow.result(timeout=5) == "compiled:slow"
    service.submit("ebnf", "a+").result(timeout=5)
    assert sorted(backend.calls) == sorted([("regex", "slow"), ("regex", "a+"), ("regex", "bad"), ("ebnf", "a+")])
    assert service.num_cache_hits == 3


def test_backend_failure_is_reported_to_every_request():
    def broken():
        raise RuntimeError("no tokenizer")

    service = CompileService(broken, num_workers=1)
    service.prepare()  # logs, does not raise
    for spec in ("a", "b"):
        with pytest.raises(RuntimeError, match="no tokenizer"):
            service.submit("regex", spec).result(timeout=5)
