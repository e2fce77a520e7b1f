"""`lang` beyond what SGLang's frontend does, against the demo-model server: the state API, one request
per select, prefix pre-caching, the branch() form, run_batch's progress bar and clear errors."""

from __future__ import annotations

import time

import pytest

import lang


@pytest.fixture(scope="module")
def backend(lang_server):
    be = lang.RuntimeEndpoint(lang_server.base_url)
    yield be
    be.shutdown()


@pytest.fixture
def posts(backend, monkeypatch):
    """Every JSON body the backend POSTs, in order."""
    sent: list[tuple[str, dict]] = []
    real = backend.http.post

    def spy(path, payload):
        sent.append((path, payload))
        return real(path, payload)

    monkeypatch.setattr(backend.http, "post", spy)
    return sent


@lang.function
def pick(s):
    s += "The module that reads JSON is"
    s += lang.select("m", choices=[" json", " os", " csv"])


def test_select_is_one_request(backend, posts) -> None:
    state = pick.run(backend=backend)
    assert state.error() is None and state["m"] in (" json", " os", " csv")
    assert len(posts) == 1
    path, body = posts[0]
    assert path == "/generate" and body["sampling_params"]["max_new_tokens"] == 0
    assert body["text"][1:] == [state.text()[: -len(state["m"])] + c for c in (" json", " os", " csv")]


def test_unconditional_select_scores_context_gain(backend) -> None:
    @lang.function
    def prog(s):
        s += "The module that reads JSON is"
        s += lang.select("m", choices=[" json", " os", " csv"], choices_method="unconditional_likelihood_normalized")

    state = prog.run(backend=backend)
    meta = state.get_meta_info("m")
    scores = meta["normalized_unconditional_prompt_logprobs"]
    assert state["m"] == [" json", " os", " csv"][scores.index(max(scores))]


@lang.function
def fan_out(s, topic):
    s += "A long shared introduction about the Python standard library and its modules. Topic: " + topic + "\n"
    forks = s.fork(3)
    for i, f in enumerate(forks):
        f += f"Point {i + 1}:" + lang.gen("point", max_tokens=3, temperature=0)
    forks.join()


def test_fork_precaches_and_joins(backend, posts) -> None:
    state = fan_out.run(backend=backend, topic="files")
    assert state.error() is None
    assert isinstance(state["point"], list) and len(state["point"]) == 3  # joined back as a list
    precache = [b for _p, b in posts if b["sampling_params"] == {"max_new_tokens": 0}]
    assert len(precache) == 1 and precache[0]["text"] == state.text()
    assert len(posts) == 4


def test_branch_runs_concurrently_and_copies_variables(backend) -> None:
    @lang.function
    def two(s):
        s += "Python modules:"
        with s.branch() as a, lang.branch(s) as b:
            a += " os is" + lang.gen("os", max_tokens=3, temperature=0)
            b += " sys is" + lang.gen("sys", max_tokens=3, temperature=0)
        s += " Done."

    state = two.run(backend=backend)
    assert state.error() is None
    assert isinstance(state["os"], str) and isinstance(state["sys"], str)
    assert state.text() == "Python modules: Done."  # branches leave their text behind


def test_state_api(backend) -> None:
    @lang.function
    def prog(s):
        s += lang.user("Name a module.")
        s += lang.assistant(lang.gen("name", max_tokens=4, temperature=0))

    state = prog.run(backend=backend)
    assert [m["role"] for m in state.messages()] == ["user", "assistant"]
    assert state.messages()[1]["content"] == state["name"].lstrip()
    meta = state.get_meta_info("name")
    assert meta["completion_tokens"] <= 4 and meta["prompt_tokens"] > 0
    assert "name" in state and "other" not in state
    with pytest.raises(KeyError, match="no variable 'other'"):
        state["other"]


def test_text_iter_whole_text(backend) -> None:
    @lang.function
    def prog(s):
        s += "The csv module"
        s += lang.gen("a", max_tokens=6, temperature=0)

    state = prog.run(backend=backend, stream=True)
    assert "".join(state.text_iter()) == state.text()


def test_run_batch_progress_bar(backend, capsys) -> None:
    @lang.function
    def short(s, q):
        s += q + lang.gen("a", max_tokens=2, temperature=0)

    states = short.run_batch([{"q": "a"}, {"q": "b"}, ("c",)], backend=backend, progress_bar=True)
    assert [s.error() for s in states] == [None] * 3
    err = capsys.readouterr().err
    assert "3/3" in err and "100%" in err


def test_server_error_surfaces(backend) -> None:
    @lang.function
    def prog(s):
        s += "Hello"
        s += lang.gen("a", max_tokens=4, top_p=7.0)
        s += lang.gen("b", max_tokens=4)

    state = prog.run(backend=backend)
    err = state.error()
    assert isinstance(err, lang.ServerError) and err.status == 400 and "top_p" in err.message
    with pytest.raises(lang.ServerError, match="top_p"):
        state["a"]
    with pytest.raises(lang.ServerError):
        state["b"]  # skipped after the failure, never hangs


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown choices_method 'best'; use one of: token_length_normalized"):
        lang.select("x", choices=["a", "b"], choices_method="best")
    with pytest.raises(ValueError, match="'choices' cannot be combined with 'regex'"):
        lang.gen("x", choices=["a", "b"], regex="a|b")
    with pytest.raises(ValueError, match="invalid regex"):
        lang.gen("x", regex="(")
    with pytest.raises(lang.LangError, match="first argument must be named 's'"):
        lang.function(lambda state: None)


def test_dead_server_is_one_line() -> None:
    from tests.app.server_proc import free_port

    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(lang.ServerUnreachable) as info:
        lang.RuntimeEndpoint(url)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert message.startswith(f"cannot reach the server at {url}/get_model_info") and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback wall


def test_server_info_and_flush(backend) -> None:
    assert lang.get_server_info(backend)["model_info"]["model_path"] == backend.get_model_name()
    assert backend.flush_cache()["success"] is True
