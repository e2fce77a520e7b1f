"""Starts the real server (`python -m app.cli serve ...`) as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProc:
    def __init__(self, model_path: str, log_path: Path, *flags: str) -> None:
        self.model_path = model_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.flags = list(flags)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240.0) -> ServerProc:
        self.start_background()
        self.wait_ready(timeout)
        return self

    def start_background(self, **popen_kwargs: object) -> ServerProc:
        """Spawns the server without waiting for it (chaos tests signal it while it starts)."""
        cmd = [sys.executable, "-m", "app.cli", "serve", "--model-path", self.model_path, "--device", "cpu",
               "--port", str(self.port), *self.flags]
        if "--admin-port" not in self.flags and "--data-dir" not in self.flags:
            cmd.append("--disable-admin")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     **popen_kwargs)  # type: ignore[call-overload]
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._log.close()
            return
        try:
            self.terminate(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
