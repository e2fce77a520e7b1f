"""entrypoint.sh: env variables become `tessera serve` flags, arguments after the image name win, and the
usual container mistakes fail with one line. A fake `tessera` on PATH records what it was exec'd with."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from engine.args import ServerArgs

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "entrypoint.sh"
FAKE = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tessera"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "HOME": str(tmp_path),
            "TESSERA_DATA_DIR": str(tmp_path / "data"), "MODEL_PATH": str(model), "TESSERA_FLAVOR": "cpu"}


def run(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    res = subprocess.run(["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=60)
    calls_file = Path(env["CALLS"])
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()] if calls_file.exists() else []
    return res, calls


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value argparse would keep: the last occurrence."""
    value = None
    for i, a in enumerate(argv):
        if a == flag:
            value = argv[i + 1]
    return value


def script_vars(name: str) -> list[str]:
    body = re.search(rf"{name}=\(([^)]*)\)", ENTRYPOINT.read_text()).group(1)
    return body.split()


def test_every_server_flag_has_an_env_variable() -> None:
    mapped = {v.lower() for v in script_vars("VALUE_VARS") + script_vars("BOOL_VARS")}
    fields = {f.name for f in dataclasses.fields(ServerArgs)}
    assert mapped | {"data_dir", "enable_metrics"} == fields
    bools = {f.name for f in dataclasses.fields(ServerArgs) if f.type == "bool"}
    assert {v.lower() for v in script_vars("BOOL_VARS")} == bools - {"enable_metrics"}


def test_env_maps_to_flags_migrates_then_serves(env) -> None:
    env.update(TP_SIZE="2", CONTEXT_LENGTH="4096", MEM_FRACTION_STATIC="0.8", API_KEY="sk-static",
               SERVED_MODEL_NAME="demo", DISABLE_RADIX_CACHE="true", LOG_REQUESTS="0")
    res, calls = run(env)
    assert res.returncode == 0, res.stderr
    migrate, serve = calls
    assert migrate == ["admin", "migrate", "--data-dir", env["TESSERA_DATA_DIR"]]
    assert serve[0] == "serve"
    expect = {"--tp-size": "2", "--context-length": "4096", "--mem-fraction-static": "0.8", "--api-key": "sk-static",
              "--served-model-name": "demo", "--model-path": env["MODEL_PATH"], "--host": "0.0.0.0",
              "--data-dir": env["TESSERA_DATA_DIR"]}
    assert {k: flag_value(serve, k) for k in expect} == expect
    assert "--disable-radix-cache" in serve and "--log-requests" not in serve


def test_arguments_after_the_image_win(env) -> None:
    env["TP_SIZE"] = "2"
    res, calls = run(env, "--tp-size", "4", "--disable-admin")
    assert res.returncode == 0, res.stderr
    (serve,) = calls  # --disable-admin: no database, so no migration
    assert flag_value(serve, "--tp-size") == "4"


@pytest.mark.parametrize("setup,needle", [
    (lambda e, t: e.update(MODEL_PATH=str(t / "absent")), "does not exist in the container"),
    (lambda e, t: (t / "empty").mkdir() or e.update(MODEL_PATH=str(t / "empty")), "has no config.json"),
    (lambda e, t: e.update(TESSERA_FLAVOR="cuda"), "run it with --gpus all"),
    (lambda e, t: e.update(DISABLE_CUDA_GRAPH="maybe"), "DISABLE_CUDA_GRAPH must be true or false"),
    # Under a regular file even root cannot create it (the image test covers an unwritable /data as uid 1000).
    (lambda e, t: (t / "file").write_text("") or e.update(TESSERA_DATA_DIR=str(t / "file" / "data")),
     "cannot create the data directory"),
])
def test_mistakes_fail_with_one_line(env, tmp_path, setup, needle) -> None:
    setup(env, tmp_path)
    res, calls = run(env)
    assert res.returncode == 2 and calls == []
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_cuda_flavour_on_cpu_device_needs_no_gpu(env) -> None:
    env.update(TESSERA_FLAVOR="cuda", DEVICE="cpu")
    res, calls = run(env)
    assert res.returncode == 0, res.stderr
    assert flag_value(calls[-1], "--device") == "cpu"


def test_other_commands_run_as_given(env) -> None:
    res, calls = run(env, "tessera", "admin", "reset-password")
    assert res.returncode == 0 and calls == [["admin", "reset-password"]]
