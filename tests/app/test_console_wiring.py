"""The admin console plugged into the serving app: KeyGate on the routes, pages on /admin or --admin-port."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.app.app_harness import assert_openai_error, running_app

ADMIN_DIR = Path(__file__).resolve().parents[2] / "app" / "admin"


def test_console_mounted_with_key_gate(tiny_llama, tmp_path) -> None:
    with running_app(tiny_llama, disable_admin=False, data_dir=str(tmp_path)) as h:
        assert type(h.app.state.ctx.gate).__name__ == "KeyGate"
        assert h.http.get("/admin/", follow_redirects=False).status_code in (200, 303, 307)
        # No keys issued and no --api-key: requests are admitted anonymously.
        r = h.http.post("/v1/completions", json={"model": tiny_llama, "prompt": "x", "max_tokens": 2})
        assert r.status_code == 200


def test_console_gate_enforces_static_key(tiny_llama, tmp_path) -> None:
    with running_app(tiny_llama, disable_admin=False, data_dir=str(tmp_path), api_key="k1") as h:
        body = {"model": tiny_llama, "prompt": "x", "max_tokens": 2}
        assert_openai_error(h.http.post("/v1/completions", json=body), 401)
        ok = h.http.post("/v1/completions", json=body, headers={"Authorization": "Bearer k1"})
        assert ok.status_code == 200


def test_console_on_its_own_port(tiny_llama, tmp_path) -> None:
    with running_app(tiny_llama, disable_admin=False, data_dir=str(tmp_path), admin_port=30999) as h:
        admin = h.app.state.admin
        assert admin is not None and admin.app is not None
        assert_openai_error(h.http.get("/admin/"), 404)  # not on the API port
        admin.ctx.close()


def _admin_imports(path: Path) -> set[str]:
    """Every app.admin submodule a file imports: at top level, inside functions or under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app.admin"):
            if node.module == "app.admin":
                found.update(a.name for a in node.names if (ADMIN_DIR / f"{a.name}.py").exists())
            else:
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("app.admin."))
    return found - {path.stem}


def test_admin_modules_have_no_import_cycle() -> None:
    graph = {p.stem: _admin_imports(p) for p in ADMIN_DIR.glob("*.py") if p.stem != "__init__"}
    assert "context" not in graph["runtime"] and "runtime" in graph["context"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, node, dep])}"
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
