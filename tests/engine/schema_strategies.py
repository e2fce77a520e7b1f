"""Hypothesis strategies for JSON schemas inside Tessera's supported subset, bounded everywhere so a
random-weight model's output ends within a few dozen tokens."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NAMES = st.text(alphabet="abcdefgh", min_size=1, max_size=3)


def _integer() -> st.SearchStrategy[dict[str, Any]]:
    return st.integers(-50, 50).flatmap(lambda lo: st.integers(lo, lo + 200).map(
        lambda hi: {"type": "integer", "minimum": lo, "maximum": hi}))


LEAVES = st.one_of(
    _integer(),
    st.just({"type": "integer", "minimum": 0, "maximum": 99, "multipleOf": 3}),
    st.just({"type": "number", "minimum": -1.5, "maximum": 2.5}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.integers(0, 5).map(lambda n: {"type": "string", "maxLength": n}),
    st.sampled_from(["^[a-z]{1,4}$", "^[0-9]{2}-[A-Z]$", "^(yes|no)$"]).map(lambda p: {"type": "string", "pattern": p}),
    st.sampled_from(["date", "uuid", "ipv4"]).map(lambda f: {"type": "string", "format": f}),
    st.lists(st.one_of(st.integers(-9, 9), NAMES, st.booleans()), min_size=1, max_size=3, unique=True)
    .map(lambda v: {"enum": v}),
    st.one_of(st.integers(0, 9), NAMES).map(lambda v: {"const": v}),
)


def _compound(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    obj = st.dictionaries(NAMES, inner, min_size=1, max_size=3).flatmap(lambda props: st.lists(
        st.sampled_from(sorted(props)), unique=True).map(lambda req: {
            "type": "object", "properties": props, "required": req, "additionalProperties": False}))
    arr = st.tuples(inner, st.integers(0, 2)).flatmap(lambda t: st.integers(t[1], 2).map(
        lambda hi: {"type": "array", "items": t[0], "minItems": t[1], "maxItems": hi}))
    tup = st.lists(inner, min_size=1, max_size=2).map(
        lambda items: {"type": "array", "prefixItems": items, "items": False})
    any_of = st.lists(inner, min_size=2, max_size=2).map(lambda branches: {"anyOf": branches})
    nullable = inner.map(lambda s: {"anyOf": [s, {"type": "null"}]})
    return st.one_of(obj, arr, tup, any_of, nullable)


SUBSCHEMAS = st.recursive(LEAVES, _compound, max_leaves=5)


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A root object schema, sometimes with a $ref into $defs."""
    root = draw(st.dictionaries(NAMES, SUBSCHEMAS, min_size=1, max_size=3))
    schema: dict[str, Any] = {"type": "object", "properties": root, "required": sorted(root),
                              "additionalProperties": False}
    if draw(st.booleans()):
        schema["$defs"] = {"D": draw(SUBSCHEMAS)}
        schema["properties"]["ref"] = {"$ref": "#/$defs/D"}
        schema["required"].append("ref")
    return schema
