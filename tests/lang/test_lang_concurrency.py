"""256 programs at once through run_batch share one connection pool, all finish correctly, and the
shared prefix (pre-cached once by run_batch) shows up as prefix-cache hits in meta_info.cached_tokens."""

from __future__ import annotations

import time

import lang

PREFIX = "You are a terse assistant for Python's standard library. Answer with one module name.\n"
QUESTIONS = ["files", "paths", "json", "dates", "random", "regex", "threads", "sockets"]


@lang.function
def ask(s, topic):
    s += PREFIX + "Topic: " + topic + "\nModule:"
    s += lang.gen("module", max_tokens=2, temperature=0)


def test_256_concurrent_programs(lang_server) -> None:
    backend = lang.RuntimeEndpoint(lang_server.base_url)
    try:
        singles = {t: ask.run(topic=t, backend=backend)["module"] for t in QUESTIONS[:2]}
        topics = [QUESTIONS[i % len(QUESTIONS)] for i in range(256)]
        start = time.monotonic()
        states = ask.run_batch([{"topic": t} for t in topics], backend=backend, num_threads=256)
        elapsed = time.monotonic() - start
        assert [s.error() for s in states] == [None] * 256
        answers: dict[str, set[str]] = {}
        for topic, state in zip(topics, states):
            assert state.text() == PREFIX + "Topic: " + topic + "\nModule:" + state["module"]
            answers.setdefault(topic, set()).add(state["module"])
        # Greedy: every copy of a question gets one answer, the one a lone run gets.
        assert all(len(v) == 1 for v in answers.values())
        assert {t: next(iter(answers[t])) for t in singles} == singles
        cached = [s.get_meta_info("module")["cached_tokens"] for s in states]
        prompt = [s.get_meta_info("module")["prompt_tokens"] for s in states]
        hits = sum(1 for c in cached if c > 0)
        print(f"256 programs in {elapsed:.1f}s: {hits} hit the prefix cache, cached {sum(cached)} of "
              f"{sum(prompt)} prompt tokens")
        assert hits >= 200 and sum(cached) >= sum(prompt) // 2
    finally:
        backend.shutdown()
