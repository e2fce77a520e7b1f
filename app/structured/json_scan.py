"""Incremental scanning of tool-call JSON objects in (possibly unfinished) model output.

Each call is an object like `{"name": "f", "arguments": {...}}`. The scanner works on the cumulative
text and never needs the end: the raw text of an arguments object only ever grows, so a stream can send
it as it comes, and the final `arguments` string is exactly what the stream sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

_WS = " \t\r\n"


@dataclass
class CallSnap:
    name: str | None = None  # set once the name string is complete
    args: str = ""  # raw arguments text seen so far (decoded once complete when it was a JSON string)
    args_streamable: bool = True  # False while the arguments are a JSON string still being written
    args_done: bool = False
    done: bool = False  # the call's object is closed


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _string_end(text: str, i: int) -> int:
    """Index after the JSON string starting at text[i] == '"', or -1 if it is unfinished."""
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    return -1


def value_end(text: str, i: int) -> int:
    """Index after the JSON value starting at text[i], or -1 if it is unfinished."""
    if i >= len(text):
        return -1
    c = text[i]
    if c == '"':
        return _string_end(text, i)
    if c in "{[":
        depth = 0
        while i < len(text):
            c = text[i]
            if c == '"':
                end = _string_end(text, i)
                if end < 0:
                    return -1
                i = end
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1
    # A scalar: it ends at a delimiter; at the end of the text it may still grow.
    j = i
    while j < len(text) and text[j] not in ",}] \t\r\n":
        j += 1
    return j if j < len(text) else -1


def scan_object(text: str, start: int, arg_keys: tuple[str, ...]) -> tuple[CallSnap, int]:
    """Scans the call object at text[start] == '{'; returns the snapshot and the index after it (-1 if open)."""
    snap = CallSnap()
    i = start + 1
    while True:
        i = _skip_ws(text, i)
        if i >= len(text):
            return snap, -1
        if text[i] == "}":
            snap.done = True
            return snap, i + 1
        if text[i] == ",":
            i += 1
            continue
        if text[i] != '"':
            return snap, -2  # not a call object
        key_end = _string_end(text, i)
        if key_end < 0:
            return snap, -1
        key = json.loads(text[i:key_end])
        i = _skip_ws(text, key_end)
        if i >= len(text):
            return snap, -1
        if text[i] != ":":
            return snap, -2
        v = _skip_ws(text, i + 1)
        end = value_end(text, v)
        if key == "name":
            if end < 0:
                return snap, -1
            name = json.loads(text[v:end])
            snap.name = name if isinstance(name, str) else None
        elif key in arg_keys and v < len(text):
            if text[v] == '"':  # arguments sent as a JSON-encoded string
                snap.args_streamable = False
                if end >= 0:
                    snap.args, snap.args_done, snap.args_streamable = json.loads(text[v:end]), True, True
            else:
                snap.args = text[v:end] if end >= 0 else text[v:]
                snap.args_done = end >= 0
        if end < 0:
            return snap, -1
        i = end


def scan_calls(text: str, pos: int, arg_keys: tuple[str, ...]) -> list[CallSnap]:
    """Every call object from text[pos:] on; characters between objects (separators, closing tags,
    array brackets) are skipped."""
    calls: list[CallSnap] = []
    while True:
        start = text.find("{", pos)
        if start < 0:
            return calls
        snap, end = scan_object(text, start, arg_keys)
        if end == -2:
            pos = start + 1
            continue
        calls.append(snap)
        if end < 0:
            return calls
        pos = end
