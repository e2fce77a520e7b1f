"""Jinja filters for the console's pages: numbers with thousands separators, readable detail values."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment


def num(value: Any, unlimited: str = "–") -> str:
    """12345 -> "12,345", 2.5 -> "2.5"; None -> `unlimited` (the caller says what absence means)."""
    if value is None:
        return unlimited
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
    return str(value)


def show(value: Any) -> str:
    """A value from a JSON detail (the audit log): never Python's `None`/`True` spelling."""
    if value is None:
        return "—"
    if isinstance(value, (bool, int, float)):
        return num(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(show(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def install(env: Environment) -> None:
    env.filters["num"] = num
    env.filters["show"] = show
