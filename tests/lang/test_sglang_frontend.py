"""SGLang's own frontend (`sglang.RuntimeEndpoint`) drives Tessera unchanged: gen, select, fork, run_batch."""

from __future__ import annotations

import pytest

sgl = pytest.importorskip("sglang", reason="install the test extra: pip install --no-deps sglang + its light deps")


@pytest.fixture(scope="module")
def backend(lang_server):
    endpoint = sgl.RuntimeEndpoint(lang_server.base_url)
    sgl.set_default_backend(endpoint)
    return endpoint


@sgl.function
def qa(s, question):
    s += "Q: " + question + "\nA:"
    s += sgl.gen("answer", max_tokens=8, temperature=0)
    s += "\nIs that right? " + sgl.select("verdict", choices=["yes", "no", "maybe"])


@sgl.function
def brainstorm(s, topic):
    s += "Ideas about " + topic + ":\n"
    forks = s.fork(3)
    for i, f in enumerate(forks):
        f += f"{i + 1}." + sgl.gen("idea", max_tokens=4, temperature=0, stop="\n")
    s["ideas"] = [f["idea"] for f in forks]
    s += "Best: " + sgl.gen("best", max_tokens=4, temperature=0)


def test_model_info_and_server_info(backend, lang_server) -> None:
    assert backend.get_model_name() == lang_server.model_path
    assert "num_running_reqs" in backend.get_server_info()


def test_gen_and_select(backend, lang_server) -> None:
    state = qa.run(question="What is a list?")
    assert isinstance(state["answer"], str)
    assert state["verdict"] in ("yes", "no", "maybe")
    meta = state.get_meta_info("answer")
    assert meta["completion_tokens"] <= 8 and meta["finish_reason"]["type"] in ("length", "stop")
    # Deterministic: greedy gen and argmax select give the same answer twice.
    again = qa.run(question="What is a list?")
    assert (again["answer"], again["verdict"]) == (state["answer"], state["verdict"])
    assert state.text().startswith("Q: What is a list?\nA:")


def test_fork(backend) -> None:
    state = brainstorm.run(topic="caching")
    ideas = state["ideas"]
    assert len(ideas) == 3 and all(isinstance(i, str) and "\n" not in i for i in ideas)
    assert isinstance(state["best"], str)


def test_run_batch(backend) -> None:
    states = qa.run_batch([{"question": q} for q in ("a?", "b?", "c?", "d?")], num_threads=4)
    assert len(states) == 4
    singles = [qa.run(question=q) for q in ("a?", "b?")]
    for batched, single in zip(states[:2], singles, strict=True):
        assert batched["answer"] == single["answer"] and batched["verdict"] == single["verdict"]


def test_streaming_gen(backend) -> None:
    state = qa.run(question="Stream it?", stream=True)
    pieces = list(state.text_iter("answer"))
    state.sync()  # the program goes on to select() after the streamed gen
    assert "".join(pieces) == state["answer"]
    assert state["verdict"] in ("yes", "no", "maybe")
