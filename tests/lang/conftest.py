"""Real Tessera servers for the frontend tests (SGLang's own frontend and `lang`).

One server with the bundled demo model serves every test in tests/lang (package scope): starting a
server costs far more than the few tokens each test generates.
"""

from __future__ import annotations

import pytest

from tests.app.server_proc import REPO, ServerProc

DEMO_MODEL = str(REPO / "models" / "demo")


@pytest.fixture(scope="package")
def lang_server(tmp_path_factory) -> ServerProc:
    log = tmp_path_factory.mktemp("lang") / "server.log"
    proc = ServerProc(DEMO_MODEL, log).start()
    yield proc
    proc.stop()
