"""`lang` installs and runs without the engine's dependencies: a fresh venv (no pip, no torch) gets the
`tessera-lang` distribution built from ./lang plus httpx, tqdm and their dependencies taken from the
test venv (offline), then imports `lang` and runs a program against the demo-model server."""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.app.server_proc import REPO

_PROGRAM = r"""
import sys, time
t0 = time.perf_counter()
import lang as sgl
import_s = time.perf_counter() - t0
for banned in ("torch", "triton", "transformers", "numpy", "engine", "app"):
    assert banned not in sys.modules, banned
try:
    import torch  # noqa: F401
    raise SystemExit("torch is importable in the lang-only venv")
except ImportError:
    pass

@sgl.function
def qa(s, question):
    s += "Q: " + question + "\nA:"
    s += sgl.gen("answer", max_tokens=4, temperature=0)
    s += " Sure?" + sgl.select("sure", choices=["yes", "no"])

state = qa.run(question="What is a list?", backend=sgl.RuntimeEndpoint(sys.argv[1]))
assert state.error() is None, state.error()
print("OK", repr(state["answer"]), state["sure"], f"import_s={import_s:.3f}", sgl.__file__)
"""


def _closure(names: list[str]) -> list[md.Distribution]:
    """The installed distributions `names` need (markers evaluated for this interpreter)."""
    from packaging.markers import Marker

    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        dist = seen[key] = md.distribution(name)
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            if marker and not Marker(marker).evaluate({"extra": ""}):
                continue
            todo.append(re.match(r"[A-Za-z0-9_.\-]+", spec).group(0))
    return list(seen.values())


def _top_level(dist: md.Distribution) -> set[str]:
    names = set()
    for f in dist.files or []:
        head = f.parts[0]
        if head.endswith((".dist-info", ".egg-info")) or head in ("..", "__pycache__") or head.endswith(".pth"):
            continue
        names.add(head)
    return names


def test_lang_without_torch(lang_server, tmp_path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # Build the real distribution from a copy (setuptools writes build/ and *.egg-info next to its source).
    src = tmp_path / "lang-src"
    shutil.copytree(REPO / "lang", src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, timeout=300)
    here = Path(sysconfig.get_paths()["purelib"])
    for dist in _closure(["httpx", "tqdm"]):
        for name in _top_level(dist):
            if (here / name).exists():
                (site / name).symlink_to(here / name)
    out = subprocess.run([str(py), "-I", "-c", _PROGRAM, lang_server.base_url], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("OK ") and str(site) in out.stdout, out.stdout
    print(out.stdout.strip())
