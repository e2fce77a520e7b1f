"""The same programs through SGLang's own frontend and through `lang`, against one Tessera server,
give identical texts at temperature 0 (gen, select, fork, run_batch, roles, streaming, logprobs)."""

from __future__ import annotations

import httpx
import pytest

import lang
from tests.lang import programs

sglang = pytest.importorskip("sglang", reason="install the test extra: pip install --no-deps sglang + its light deps")


@pytest.fixture(scope="module")
def backends(lang_server):
    from sglang.lang.chat_template import ChatTemplate, register_chat_template

    ours = lang.RuntimeEndpoint(lang_server.base_url)
    # SGLang guesses role markers from the model path (the demo model would get "USER:"); give it the
    # markers the server publishes so both frontends write the same prompt.
    roles = httpx.get(lang_server.base_url + "/get_model_info").json()["chat_template_roles"]
    register_chat_template(ChatTemplate(name="tessera-demo", default_system_prompt=None,
                                        role_prefix_and_suffix={r: tuple(roles[r]) for r in ("system", "user", "assistant")}))
    theirs = sglang.RuntimeEndpoint(lang_server.base_url, chat_template_name="tessera-demo")
    yield theirs, ours
    ours.shutdown()


@pytest.fixture(scope="module")
def both():
    return programs.build(sglang), programs.build(lang)


def _pair(both, backends, name, **kwargs):
    (sg_prog, lang_prog), (sg_be, lang_be) = (getattr(both[0], name), getattr(both[1], name)), backends
    return sg_prog.run(backend=sg_be, **kwargs), lang_prog.run(backend=lang_be, **kwargs)


def test_role_markers_come_from_the_server(backends) -> None:
    _theirs, ours = backends
    template = ours.get_chat_template()
    assert template.role_prefix_and_suffix["user"] == ("<|user|>\n", "<|end|>\n")
    assert template.role_prefix_and_suffix["assistant"] == ("<|assistant|>\n", "<|end|>\n")


@pytest.mark.parametrize("question", ["What does a list hold?", "How do I read a file?"])
def test_gen_and_select(both, backends, question) -> None:
    theirs, ours = _pair(both, backends, "qa", question=question)
    assert ours.error() is None and theirs.error() is None
    assert ours.text() == theirs.text()
    assert (ours["answer"], ours["verdict"]) == (theirs["answer"], theirs["verdict"])
    assert ours.get_meta_info("verdict")["normalized_prompt_logprobs"] == pytest.approx(
        theirs.get_meta_info("verdict")["normalized_prompt_logprobs"], abs=1e-4)


def test_greedy_token_select(both, backends) -> None:
    """Greedy token selection keeps the choices whose logprob at a position equals the best exactly, and its matrix
    starts with prompt tokens every choice shares: on the CPU the two runs (separate requests, batched as they
    arrive) may see those logprobs differ in the last bits, and then the pick follows the noise (a CI run once got
    ' os.path' against ' sys'). So each frontend's pick must be the one SGLang's own GreedyTokenSelection makes from
    that run's logprobs, the two runs' logprobs must agree, and the picks must too where the logprobs are equal."""
    from sglang.lang.choices import greedy_token_selection as sglang_greedy

    theirs, ours = _pair(both, backends, "greedy_select", topic="files")
    metas = [state.get_meta_info("module") for state in (theirs, ours)]
    for state, meta in zip((theirs, ours), metas):
        reference = sglang_greedy(choices=programs.MODULES, normalized_prompt_logprobs=meta["normalized_prompt_logprobs"],
                                  input_token_logprobs=meta["input_token_logprobs"],
                                  output_token_logprobs=meta["output_token_logprobs"])
        assert state["module"] == reference.decision
    rows = [[[t[0] for t in option] for option in meta["input_token_logprobs"]] for meta in metas]
    assert [len(r) for r in rows[0]] == [len(r) for r in rows[1]]
    assert all(a == pytest.approx(b, abs=1e-4) for a, b in zip(rows[0], rows[1]))
    if rows[0] == rows[1]:
        assert ours["module"] == theirs["module"] and ours.text() == theirs.text()


def test_fork(both, backends) -> None:
    theirs, ours = _pair(both, backends, "brainstorm", topic="caching")
    assert ours["ideas"] == theirs["ideas"] and len(ours["ideas"]) == 3
    assert ours.text() == theirs.text()


def test_roles(both, backends) -> None:
    theirs, ours = _pair(both, backends, "chat", question="What is a tuple?")
    assert ours.text() == theirs.text()
    assert ours.messages() == theirs.messages()
    assert [m["role"] for m in ours.messages()] == ["system", "user", "assistant", "user", "assistant"]


def test_run_batch(both, backends) -> None:
    questions = [{"question": q} for q in ("What is a dict?", "What is a set?", "What is a str?")]
    theirs = both[0].qa.run_batch(questions, backend=backends[0], num_threads=3)
    ours = both[1].qa.run_batch(questions, backend=backends[1], num_threads=3)
    assert [s.text() for s in ours] == [s.text() for s in theirs]


def test_streaming(both, backends) -> None:
    ours = both[1].stream_gen.run(backend=backends[1], prompt="The json module", stream=True)
    our_pieces = list(ours.text_iter("out"))  # read while it runs
    theirs = both[0].stream_gen.run(backend=backends[0], prompt="The json module", stream=True)
    sg_pieces = list(theirs.text_iter("out"))
    assert "".join(our_pieces) == "".join(sg_pieces) == ours["out"]
    assert len(our_pieces) > 1  # it really streamed
    assert ours.text() == theirs.text()


def test_logprobs(both, backends) -> None:
    theirs, ours = _pair(both, backends, "logprobs", prompt="The os module")
    assert ours.text() == theirs.text()
    mine, ref = ours.get_meta_info("out"), theirs.get_meta_info("out")
    assert [e[1] for e in mine["output_token_logprobs"]] == [e[1] for e in ref["output_token_logprobs"]]
    assert [e[0] for e in mine["output_token_logprobs"]] == pytest.approx(
        [e[0] for e in ref["output_token_logprobs"]], abs=1e-4)
    assert len(mine["output_top_logprobs"][0]) == 2
