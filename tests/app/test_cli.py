"""`tessera` command line: bad flags fail fast with one line and exit 2; admin reset-password works."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.app.server_proc import REPO, free_port


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("argv,needle", [
    (["serve", "--port", "0"], "--port must be in 1..65535"),
    (["serve", "--model-path", "/no/such/model"], "does not exist"),
    (["serve", "--tp-size", "0", "--load-format", "dummy"], "--tp-size must be >= 1"),
    (["serve", "--schedule-policy", "random", "--load-format", "dummy"], "--schedule-policy must be one of"),
    (["serve", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["serve", "--port", "abc"], "invalid int value"),
    (["serve", "--load-format", "dummy", "--chat-template", "/no/such/template.jinja"], "--chat-template"),
])
def test_bad_flags_one_line_exit_2(argv, needle) -> None:
    t0 = time.monotonic()
    res = _run(*argv)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert time.monotonic() - t0 < 30  # nothing heavy loaded


def test_model_path_without_config_exits_2_before_writing_the_data_dir(tmp_path) -> None:
    """An existing directory that holds no model is a flag error like a missing path: one line, exit 2, and the
    data dir (database, secret key, admin password) is not created."""
    data_dir = tmp_path / "data"
    res = _run("serve", "--model-path", str(tmp_path), "--data-dir", str(data_dir))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "is not a model directory" in lines[0], res.stderr
    assert not data_dir.exists()


def test_help_lists_server_flags() -> None:
    res = _run("serve", "--help")
    assert res.returncode == 0
    for flag in ("--model-path", "--tp-size", "--api-key", "--chat-template", "--drain-timeout", "--disable-admin"):
        assert flag in res.stdout


def test_admin_reset_password(tmp_path) -> None:
    # A data dir without the console database (a mistyped path): one line, exit 2, nothing created.
    res = _run("admin", "reset-password", "--data-dir", str(tmp_path / "typo"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "no console database" in lines[0], res.stderr
    assert not (tmp_path / "typo").exists()
    from app.db.database import Database

    Database.open(str(tmp_path)).close()  # what the server's first start creates
    res = _run("admin", "reset-password", "--data-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    password = res.stdout.split("new admin password: ", 1)[1].split()[0]
    assert len(password) >= 12
    assert (tmp_path / "admin_password").read_text().strip() == password


def test_engine_start_failure_exits_1_with_reason(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")  # no model_type: nothing can load it
    res = _run("serve", "--model-path", str(tmp_path), "--device", "cpu", "--port", str(free_port()),
               "--disable-admin")
    assert res.returncode == 1
    assert "engine failed to start" in res.stderr


def test_admin_migrate(tmp_path) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(REPO / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    res = _run("admin", "migrate", "--data-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"database schema at {head}" and (tmp_path / "tessera.db").exists()
    again = _run("admin", "migrate", "--data-dir", str(tmp_path))  # idempotent
    assert again.returncode == 0 and again.stdout == res.stdout


def test_admin_migrate_bad_database_is_one_line(tmp_path) -> None:
    res = _run("admin", "migrate", "--data-dir", str(tmp_path), "--database-url", "nosuchdb://x/y")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera admin migrate: error:"), res.stderr


def test_tp_size_that_cannot_split_the_model_fails_before_the_data_dir(tiny_llama, tmp_path) -> None:
    data = tmp_path / "data"
    res = _run("serve", "--model-path", tiny_llama, "--device", "cpu", "--tp-size", "3", "--data-dir", str(data),
               "--port", str(free_port()))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tp-size 3 must divide the model's attention heads" in lines[0], res.stderr
    assert not data.exists()


def test_quantization_flag_against_the_checkpoint_is_one_line(tiny_llama, tmp_path) -> None:
    """--quantization awq on a model without an AWQ quantization_config fails before the data dir."""
    data = tmp_path / "data"
    res = _run("serve", "--model-path", tiny_llama, "--device", "cpu", "--quantization", "awq",
               "--data-dir", str(data), "--port", str(free_port()))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--quantization awq needs a checkpoint quantized with awq" in lines[0], res.stderr
    assert not data.exists()


def test_busy_port_is_reported_before_the_database_or_engine(tiny_llama, tmp_path) -> None:
    data = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        res = _run("serve", "--model-path", tiny_llama, "--device", "cpu", "--data-dir", str(data),
                   "--port", str(port))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port} is already in use" in lines[0], res.stderr
    assert not data.exists() and time.monotonic() - t0 < 30
