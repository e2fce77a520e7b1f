"""Fixtures for the serving tests: one shared real server per session (engine starts cost seconds); for
the console tests, an in-process demo app (fake engine) and a logged-in client on it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import pytest_asyncio

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
    """The served name: the model directory's name (requests may still use the full path)."""
    return Path(tiny_llama).name


@pytest.fixture
def demo_api_key() -> str | None:
    """The demo app's static --api-key; a module overrides this fixture to set one."""
    return None


@pytest.fixture
def app(tmp_path: Path, demo_api_key: str | None):
    from app.admin.demo import create_demo_app

    application = create_demo_app(str(tmp_path / "data"), restart_delay_s=0.05, fast_hashing=True,
                                  api_key=demo_api_key)
    yield application
    application.state.demo.ctx.close()


@pytest_asyncio.fixture
async def console(app):
    """(client, csrf headers) logged in with the password already changed."""
    from app.admin.fakes import login_with_new_password

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as c:
        csrf = await login_with_new_password(c, app.state.demo.ctx.data_dir)
        yield c, {"X-CSRF-Token": csrf}
