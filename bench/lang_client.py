"""The client footprint of `lang` against SGLang's frontend: import time and installed size.

    python bench/lang_client.py [--runs 5]

Import time is the median wall time of `import lang` / `import sglang` (what `import X as sgl` costs)
in fresh interpreters; `lang` loads httpx only when a backend is created, so `import lang, httpx` is
shown too (the cost before the first request). Installed size sums the files of a distribution and of every distribution its
metadata requires (markers evaluated here, extras off), as found in this venv; requirements that are
not installed here are listed, so the SGLang number is a lower bound of what `pip install sglang` brings.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def import_seconds(module: str, runs: int) -> tuple[float, list[str]]:
    code = (f"import sys, time; t = time.perf_counter(); import {module}; dt = time.perf_counter() - t; "
            "print(dt); print(','.join(sorted(k for k in ('torch', 'triton', 'transformers', 'numpy') "
            "if k in sys.modules)))")
    times, heavy = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
        lines = out.stdout.splitlines()
        times.append(float(lines[0]))
        heavy = [x for x in (lines[1] if len(lines) > 1 else "").split(",") if x]
    return statistics.median(times), heavy


def _requires(dist: md.Distribution) -> list[str]:
    from packaging.markers import Marker

    names = []
    for req in dist.requires or []:
        spec, _, marker = req.partition(";")
        try:
            if marker and not Marker(marker).evaluate({"extra": ""}):
                continue
        except Exception:  # noqa: BLE001 - an unparsable marker: count the requirement
            pass
        names.append(re.match(r"[A-Za-z0-9_.\-]+", spec.strip()).group(0))
    return names


def closure_size(roots: list[md.Distribution]) -> tuple[int, int, list[str]]:
    """(bytes, number of distributions, requirements not installed here)."""
    seen: dict[str, md.Distribution] = {}
    missing: set[str] = set()
    todo = list(roots)
    while todo:
        dist = todo.pop()
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for name in _requires(dist):
            try:
                todo.append(md.distribution(name))
            except md.PackageNotFoundError:
                missing.add(name)
    total = 0
    for dist in seen.values():
        for f in dist.files or []:
            path = Path(dist.locate_file(f))
            if path.is_file():
                total += path.stat().st_size
    return total, len(seen), sorted(missing)


class _LocalLang(md.Distribution):
    """`lang` as `pip install ./lang` would install it: its files plus httpx and tqdm."""

    def read_text(self, filename: str) -> str | None:
        if filename == "METADATA":
            return "Name: tessera-lang\nRequires-Dist: httpx\nRequires-Dist: tqdm\n"
        return None

    def locate_file(self, path):  # type: ignore[override]
        return REPO / "lang" / path

    @property
    def files(self):  # type: ignore[override]
        return [md.PackagePath(p.relative_to(REPO / "lang")) for p in (REPO / "lang").rglob("*.py")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    lang_s, lang_heavy = import_seconds("lang", args.runs)
    lang_bytes, lang_n, lang_missing = closure_size([_LocalLang()])
    rows.append(("lang (tessera-lang)", lang_s, lang_heavy, lang_bytes, lang_n, lang_missing))
    with_http_s, _ = import_seconds("lang, httpx", args.runs)
    rows.append(("  import lang, httpx", with_http_s, [], lang_bytes, lang_n, lang_missing))
    try:
        sg = md.distribution("sglang")
    except md.PackageNotFoundError:
        print("sglang is not installed: pip install --no-deps sglang to compare")
    else:
        sg_s, sg_heavy = import_seconds("sglang", args.runs)
        sg_bytes, sg_n, sg_missing = closure_size([sg])
        rows.append((f"sglang {sg.version} frontend", sg_s, sg_heavy, sg_bytes, sg_n, sg_missing))
    print(f"{'client':28} {'import s':>9} {'installed MB':>13} {'dists':>6}  heavy modules imported / not installed here")
    for name, secs, heavy, size, n, missing in rows:
        print(f"{name:28} {secs:9.3f} {size / 2**20:13.1f} {n:6d}  {','.join(heavy) or '-'} / "
              f"{len(missing)} missing{': ' + ', '.join(missing[:8]) + (' ...' if len(missing) > 8 else '') if missing else ''}")


if __name__ == "__main__":
    main()
