"""The browser suites never skip silently in CI: without Chromium they fail when `CI` is set, and skip
(with the reason) on a developer box. Runs pytest on one browser test with Chromium off the PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ONE_BROWSER_TEST = "tests/e2e/test_console_flow.py::test_dashboard_with_gpus_and_tp_validation"


def _run_without_chromium(ci: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path)  # an empty directory: shutil.which("chromium") finds nothing
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", ONE_BROWSER_TEST],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_missing_chromium_fails_in_ci(tmp_path: Path) -> None:
    r = _run_without_chromium("true", tmp_path)
    assert r.returncode != 0, r.stdout
    assert "chromium is not installed" in r.stdout and "CI is set" in r.stdout, r.stdout[-2000:]
    assert "skipped" not in r.stdout.splitlines()[-1]


def test_missing_chromium_skips_outside_ci(tmp_path: Path) -> None:
    r = _run_without_chromium(None, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "1 skipped" in r.stdout.splitlines()[-1]
