"""Constrained generation through `lang`: `gen(regex=...)`, `gen(json_schema=...)`, `gen_int`,
`gen_string` (enforced by the server's grammar engine), the same through SGLang's own frontend, the
OpenAI backend's constrained-choices `select`, and the regex example."""

from __future__ import annotations

import importlib.util
import json
import re

import httpx
import pytest

import lang
from tests.app.server_proc import REPO

pytest.importorskip("xgrammar", reason="constrained decoding needs the grammar extra: pip install -e '.[grammar]'")

YEAR = r"(19|20)[0-9]{2}"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "year": {"type": "integer", "minimum": 1990, "maximum": 2030}},
          "required": ["name", "year"], "additionalProperties": False}


@pytest.fixture(scope="module")
def backend(lang_server):
    be = lang.RuntimeEndpoint(lang_server.base_url)
    yield be
    be.shutdown()


def _program(sgl):
    @sgl.function
    def facts(s, topic):
        s += "Facts about " + topic + ".\nYear of release:"
        s += sgl.gen("year", max_tokens=8, regex=YEAR, temperature=0)
        s += "\nAs JSON: " + sgl.gen("record", max_tokens=48, json_schema=json.dumps(SCHEMA), temperature=0)
        s += "\nNumber of modules: " + sgl.gen_int("count", max_tokens=6, temperature=0)
        s += "\nName: " + sgl.gen_string("name", max_tokens=12, temperature=0)

    return facts


def test_regex_json_schema_int_string(backend) -> None:
    state = _program(lang).run(topic="Python", backend=backend)
    assert state.error() is None, state.error()
    assert re.fullmatch(YEAR, state["year"])
    record = json.loads(state["record"])
    assert set(record) == {"name", "year"} and isinstance(record["year"], int) and 1990 <= record["year"] <= 2030
    assert re.fullmatch(r"[-+]?[0-9]+", state["count"].strip())
    assert re.fullmatch(r"\"[\w\d\s]*\"", state["name"])


def _short(sgl):
    @sgl.function
    def year(s, topic):
        s += "Facts about " + topic + ".\nYear of release:" + sgl.gen("year", max_tokens=8, regex=YEAR, temperature=0)
        s += "\nModules: " + sgl.gen_int("count", max_tokens=6, temperature=0)

    return year


def test_same_text_as_sglang_frontend(backend, lang_server) -> None:
    sglang = pytest.importorskip("sglang")
    ours = _short(lang).run(topic="JSON", backend=backend)
    theirs = _short(sglang).run(topic="JSON", backend=sglang.RuntimeEndpoint(lang_server.base_url))
    assert ours.error() is None and theirs.error() is None
    assert ours.text() == theirs.text()


def test_openai_backend_constrained_choices(lang_server, backend) -> None:
    """A server without prompt logprobs (echo is refused here) still serves select, through the
    choices as a regex; gen(regex=...) goes through as the `regex` extra field."""
    real = httpx.HTTPTransport()

    def refuse_echo(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/completions") and json.loads(request.content).get("echo"):
            return httpx.Response(400, json={"error": {"message": "echo is not supported"}})
        return real.handle_request(request)

    model = backend.http.get("/v1/models")["data"][0]["id"]
    oai = lang.OpenAI(model, base_url=lang_server.base_url + "/v1", api_key="none")
    oai.http._client = httpx.Client(transport=httpx.MockTransport(refuse_echo), timeout=120)

    @lang.function
    def pick(s):
        s += "The module that reads JSON is"
        s += lang.select("m", choices=[" json", " os.path", " csv"])
        s += ". It appeared in" + lang.gen("year", max_tokens=6, regex=YEAR, temperature=0)

    state = pick.run(backend=oai)
    assert state.error() is None, state.error()
    assert state["m"] in (" json", " os.path", " csv") and state.get_meta_info("m")["constrained"] is True
    assert re.fullmatch(YEAR, state["year"].strip())


def test_regex_example(backend) -> None:
    spec = importlib.util.spec_from_file_location("example_regex", REPO / "examples" / "regex_extraction.py")
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    state = ex.main(backend)
    assert re.fullmatch(ex.VERSION, state["version"]) and re.fullmatch(ex.DATE, state["date"])
    assert isinstance(int(state["features"]), int)
