"""A real Tessera server for the SGLang-frontend tests."""

from __future__ import annotations

import pytest

from tests.app.server_proc import ServerProc


@pytest.fixture(scope="module")
def lang_server(tiny_llama, tmp_path_factory) -> ServerProc:
    log = tmp_path_factory.mktemp("lang") / "server.log"
    proc = ServerProc(tiny_llama, log).start()
    yield proc
    proc.stop()
