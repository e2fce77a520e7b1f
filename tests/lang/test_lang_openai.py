"""The `OpenAI` backend against Tessera's /v1 with a key issued in the admin console (and a 401 without
one); `RuntimeEndpoint(url, api_key=...)` against the same key-protected server."""

from __future__ import annotations

import httpx
import pytest

import lang
from tests.app.server_proc import ServerProc
from tests.lang.conftest import DEMO_MODEL


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("lang_openai")
    proc = ServerProc(DEMO_MODEL, root / "server.log", "--data-dir", str(root / "data"))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TESSERA_ADMIN_PASSWORD", raising=False)
        mp.delenv("DATABASE_URL", raising=False)
        proc.start()
    try:
        with httpx.Client(base_url=proc.base_url, timeout=30) as c:
            initial = (root / "data" / "admin_password").read_text().strip()
            r = c.post("/admin/api/login", json={"username": "admin", "password": initial})
            csrf = r.json()["csrf_token"]
            c.post("/admin/api/password", json={"old_password": initial, "new_password": "lang-test-password-1"},
                   headers={"X-CSRF-Token": csrf}).raise_for_status()
            r = c.post("/admin/api/keys", json={"name": "lang"}, headers={"X-CSRF-Token": csrf})
            assert r.status_code == 201, r.text
            key = r.json()["key"]
            model = c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).json()["data"][0]["id"]
        yield proc, key, model
    finally:
        proc.stop()


@lang.function
def qa(s, question):
    s += "Q: " + question + "\nA:"
    s += lang.gen("answer", max_tokens=6, temperature=0, stop="\n")
    s += "\nIs that right?" + lang.select("verdict", choices=[" yes", " no", " maybe"])


@lang.function
def chat(s, question):
    s += lang.system("You answer in one sentence.")
    s += lang.user(question)
    s += lang.assistant(lang.gen("answer", max_tokens=6, temperature=0))


def test_openai_backend_with_issued_key(keyed_server, monkeypatch) -> None:
    proc, key, model = keyed_server
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    oai = lang.OpenAI(model, base_url=proc.base_url + "/v1", api_key=key)
    native = lang.RuntimeEndpoint(proc.base_url, api_key=key)
    state = qa.run(question="What is a list?", backend=oai)
    assert state.error() is None
    assert state["verdict"] in (" yes", " no", " maybe")
    assert len(state.get_meta_info("verdict")["normalized_prompt_logprobs"]) == 3
    # Greedy text through /v1/completions equals greedy text through the native /generate.
    ref = qa.run(question="What is a list?", backend=native)
    assert state["answer"] == ref["answer"] and ref.error() is None
    assert state.get_meta_info("answer")["completion_tokens"] >= 1

    talk = chat.run(question="What is a tuple?", backend=oai)
    assert talk.error() is None and isinstance(talk["answer"], str)
    assert [m["role"] for m in talk.messages()] == ["system", "user", "assistant"]
    # The chat route applied the server's own template: same answer as the native route with its markers.
    assert talk["answer"].strip() == chat.run(question="What is a tuple?", backend=native)["answer"].strip()

    streamed = qa.run(question="What is a dict?", backend=oai, stream=True)
    pieces = list(streamed.text_iter("answer"))
    streamed.sync()
    assert "".join(pieces) == streamed["answer"] == qa.run(question="What is a dict?", backend=native)["answer"]


def test_openai_backend_without_key_is_401(keyed_server, monkeypatch) -> None:
    proc, key, model = keyed_server
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for bad in (None, key[:-1] + ("x" if key[-1] != "x" else "y")):
        state = qa.run(question="hi", backend=lang.OpenAI(model, base_url=proc.base_url + "/v1", api_key=bad))
        err = state.error()
        assert isinstance(err, lang.ServerError) and err.status == 401
        assert ("Missing API key" if bad is None else "Incorrect API key") in err.message
    with pytest.raises(lang.ServerError, match="401"):
        lang.RuntimeEndpoint(proc.base_url)
