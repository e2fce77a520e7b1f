"""Fixtures for the serving tests: one shared real server per session (engine starts cost seconds)."""

from __future__ import annotations

import pytest

from tests.app.server_proc import ServerProc


@pytest.fixture(scope="session")
def server(tiny_llama, tmp_path_factory) -> ServerProc:
    """The real server on the tiny Llama; tests must leave it idle and healthy."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = ServerProc(tiny_llama, log).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def model_name(tiny_llama) -> str:
    return tiny_llama
