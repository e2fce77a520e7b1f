"""In-process app with the fake engine (fast tests of routes, validation and supervision)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

from app.server import create_app
from engine.args import ServerArgs
from tests.app.fake_engine import FakeBehaviour, FakeEngineClient


class Harness:
    def __init__(self, client: TestClient, behaviour: FakeBehaviour, clients: list[FakeEngineClient]) -> None:
        self.http = client
        self.behaviour = behaviour
        self.clients = clients  # every engine client built so far; the last one is current

    @property
    def app(self) -> Any:
        return self.http.app

    @property
    def supervisor(self) -> Any:
        return self.app.state.ctx.supervisor

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, self.supervisor.status()
            time.sleep(0.02)


@contextlib.contextmanager
def running_app(model_path: str, behaviour: FakeBehaviour | None = None, wait: bool = True,
                **arg_overrides: Any) -> Iterator[Harness]:
    behaviour = behaviour or FakeBehaviour()
    clients: list[FakeEngineClient] = []

    def factory(args: ServerArgs) -> FakeEngineClient:
        clients.append(FakeEngineClient(args, behaviour))
        return clients[-1]

    args = ServerArgs(**{"model_path": model_path, "device": "cpu", "disable_admin": True, **arg_overrides})
    app = create_app(args, client_factory=factory)
    with TestClient(app, raise_server_exceptions=False) as client:
        harness = Harness(client, behaviour, clients)
        if wait:
            harness.wait_ready()
        yield harness


def assert_openai_error(resp: Any, status: int | None = None) -> dict[str, Any]:
    if status is not None:
        assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    return err
