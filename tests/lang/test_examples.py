"""Every program in examples/ runs against the demo-model server (greedy) with the structure it promises."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

import lang
from tests.app.server_proc import REPO


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def backend(lang_server):
    be = lang.RuntimeEndpoint(lang_server.base_url)
    yield be
    be.shutdown()


def test_multi_hop_qa(backend) -> None:
    ex = _example("multi_hop_qa")
    state = ex.main(backend)
    subs = [state[f"sub_{i}"] for i in range(ex.NUM_HOPS)]
    assert all(isinstance(q, str) and "\n" not in q for q in subs)
    facts = state["fact"]  # gathered from the parallel forks, in fork order
    assert isinstance(facts, list) and len(facts) == ex.NUM_HOPS and all("\n" not in f for f in facts)
    text = state.text()
    assert "Facts:\n" + "".join(f"- {f.strip()}\n" for f in facts) + "Final answer:" + state["answer"] in text
    assert text.endswith(state["answer"])


def test_batch_qa_with_progress_bar(backend, capsys) -> None:
    ex = _example("batch_qa")
    states = ex.main(backend)
    assert len(states) == len(ex.QUESTIONS)
    for q, s in zip(ex.QUESTIONS, states):
        assert ("Question: " + q + "\nAnswer:") in s.text()
        assert "\n" not in s["answer"] and s["confidence"] in (" high", " medium", " low")
    # run_batch prefilled the shared instruction: the programs find it in the prefix cache.
    assert sum(1 for s in states if s.get_meta_info("answer")["cached_tokens"] > 0) >= len(states) - 1
    err = capsys.readouterr().err
    assert f"{len(ex.QUESTIONS)}/{len(ex.QUESTIONS)}" in err


def test_chat_agent_loop(backend) -> None:
    ex = _example("chat_agent")
    assert ex.calculator("12 * 7 + 3") == "87" and ex.calculator("__import__('os')").startswith("error")
    state = ex.main(backend)
    steps = state["steps"]
    assert len(steps) <= ex.MAX_STEPS
    assert all(st["tool"] in ("calculator", "clock") and st["observation"] for st in steps)
    roles = [m["role"] for m in state.messages()]
    # system, the task, then per step an assistant turn and (unless it finished) the observation.
    assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
    assert roles[2:-1] == ["assistant", "user"] * len(steps) + (["assistant"] if len(steps) < ex.MAX_STEPS else [])
    assert state.messages()[-1]["content"].startswith("Final answer:")
