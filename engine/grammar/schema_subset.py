"""The JSON-schema subset Tessera enforces, checked before compiling.

xgrammar compiles many schemas whose keywords it cannot enforce, printing a warning at most and
producing a grammar that admits documents the schema forbids (`not`, `uniqueItems`, unknown
`format`s, `oneOf` treated as `anyOf`, ...). A user who asked for a schema must never get output
that fails it, so every such keyword is refused here, naming the JSON pointer where it sits.
Keywords that only narrow the output (xgrammar's strict mode drops optional extra properties, its
`pattern` is anchored) are accepted: the output still validates.
"""

from __future__ import annotations

from typing import Any

# Validation keywords xgrammar ignores or weakens; the value explains what to do instead.
UNSUPPORTED = {
    "not": "negation cannot be enforced",
    "if": "conditional schemas cannot be enforced",
    "then": "conditional schemas cannot be enforced",
    "else": "conditional schemas cannot be enforced",
    "dependentRequired": "dependencies between properties cannot be enforced",
    "dependentSchemas": "dependencies between properties cannot be enforced",
    "dependencies": "dependencies between properties cannot be enforced",
    "contains": "cannot be enforced; list the item schema in 'items' instead",
    "minContains": "cannot be enforced",
    "maxContains": "cannot be enforced",
    "$dynamicRef": "dynamic references are not supported; use '$ref'",
    "$dynamicAnchor": "dynamic references are not supported; use '$ref'",
    "$recursiveRef": "recursive references are not supported; use '$ref'",
    "$recursiveAnchor": "recursive references are not supported; use '$ref'",
    "additionalItems": "not supported; use 'prefixItems' and 'items'",
}
# xgrammar's built-in string formats (others are silently treated as plain strings).
FORMATS = frozenset({"email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname", "uuid", "uri",
                     "uri-reference", "uri-template", "json-pointer", "relative-json-pointer"})
# Keywords whose value is one subschema / a map of subschemas / a list of subschemas.
_ONE = ("items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "propertyNames", "not",
        "if", "then", "else", "contains")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")


class SchemaSubsetError(ValueError):
    def __init__(self, pointer: str, keyword: str, reason: str) -> None:
        super().__init__(f"unsupported JSON schema keyword '{keyword}' at '{pointer or '/'}': {reason}")
        self.pointer = pointer
        self.keyword = keyword


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def check_schema_subset(schema: Any, pointer: str = "", root: Any = None) -> None:
    """Raises SchemaSubsetError for the first keyword Tessera cannot enforce (depth first). `root` is the
    whole document (for local $refs); the top-level call leaves it out."""
    root = schema if root is None else root
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaSubsetError(pointer, "", f"a schema must be an object or a boolean, got {type(schema).__name__}")
    _check_node(schema, pointer, root)
    for key in _ONE:
        if isinstance(schema.get(key), (dict, bool)):
            check_schema_subset(schema[key], f"{pointer}/{key}", root)
    for key in _MAP:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                if key == "dependentSchemas":
                    continue  # already refused above
                check_schema_subset(sub, f"{pointer}/{key}/{_escape(name)}", root)
    for key in _LIST:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                check_schema_subset(sub, f"{pointer}/{key}/{i}", root)


def _check_node(schema: dict[str, Any], pointer: str, root: Any) -> None:
    def refuse(keyword: str, reason: str) -> None:
        raise SchemaSubsetError(f"{pointer}/{_escape(keyword)}", keyword, reason)

    for keyword, reason in UNSUPPORTED.items():
        if keyword in schema:
            refuse(keyword, reason)
    if schema.get("uniqueItems") is True:
        refuse("uniqueItems", "unique array items cannot be enforced")
    for key in ("unevaluatedProperties", "unevaluatedItems"):
        if key in schema and schema[key] is not False:
            refuse(key, "only 'false' is supported")
    if "multipleOf" in schema and schema.get("type") != "integer":
        refuse("multipleOf", "supported only on schemas with \"type\": \"integer\"")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(schema.get(key), bool):
            refuse(key, "the draft-4 boolean form is not supported; give the bound as a number")
    if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) > 1:
        refuse("allOf", "only a single-branch allOf is supported; merge the branches into one schema")
    if isinstance(schema.get("oneOf"), list) and len(schema["oneOf"]) > 1 and not branches_disjoint(schema["oneOf"],
                                                                                                    root):
        refuse("oneOf", "exclusive alternatives cannot be enforced unless the branches are provably disjoint "
                        "(different types, or a required property with different 'const'/'enum' values in each "
                        "branch, as in a discriminated union); use 'anyOf' when they are")
    fmt = schema.get("format")
    if fmt is not None and fmt not in FORMATS:
        refuse("format", f"format {fmt!r} is not supported (supported: {', '.join(sorted(FORMATS))})")
    if "pattern" in schema and ("minLength" in schema or "maxLength" in schema):
        refuse("pattern", "'pattern' together with 'minLength'/'maxLength' is not supported; "
                          "put the length into the pattern")
    ref = schema.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/"))):
        refuse("$ref", "only local references ('#' or '#/...') are supported")
    if isinstance(schema.get("items"), list):
        refuse("items", "the array form of 'items' is not supported; use 'prefixItems'")


# ---- oneOf whose branches cannot overlap ---------------------------------------------------------------
# xgrammar compiles oneOf as anyOf. That is exact when no document can match two branches, and two
# shapes make that provable: branches with disjoint JSON types, and objects that all require one
# property whose allowed constants differ (pydantic's discriminated unions, OpenAI tool-call variants).

def _resolve(schema: Any, root: Any, depth: int = 0) -> Any:
    """Follows a local '$ref' ('#' or '#/a/b'); anything unresolvable comes back as None."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and depth < 16:
        ref = schema["$ref"]
        if not (ref == "#" or ref.startswith("#/")):
            return None
        node = root
        for part in ref[2:].split("/") if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        schema, depth = node, depth + 1
    return schema


def _types(schema: dict[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    kinds = {kind} if isinstance(kind, str) else set(kind) if isinstance(kind, list) else None
    if kinds is not None and "integer" in kinds:
        kinds.add("number")  # every integer is a number
    if kinds is not None and "number" in kinds:
        kinds.add("integer")
    return kinds


def _constants(schema: Any) -> list[Any] | None:
    """The values a property schema allows, when it lists them ('const' or 'enum')."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return [schema["const"]]
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    return None


def _json_key(value: Any) -> str:
    """Equal JSON values give equal keys (JSON Schema compares 1 and 1.0 as equal numbers)."""
    import json

    def normal(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [normal(x) for x in v]
        if isinstance(v, dict):
            return {k: normal(x) for k, x in v.items()}
        return v

    return json.dumps(normal(value), sort_keys=True)


def _discriminated(branches: list[dict[str, Any]]) -> bool:
    common = set.intersection(*(set(b.get("required") or []) for b in branches))
    for name in sorted(common):
        seen: set[str] = set()
        for branch in branches:
            values = _constants((branch.get("properties") or {}).get(name))
            if values is None:
                break
            keys = {_json_key(v) for v in values}
            if keys & seen:
                break
            seen |= keys
        else:
            return True
    return False


def branches_disjoint(branches: list[Any], root: Any) -> bool:
    resolved = [_resolve(b, root) for b in branches]
    if not all(isinstance(b, dict) for b in resolved):
        return False
    kinds = [_types(b) for b in resolved]
    if all(k is not None for k in kinds):
        if all(not (kinds[i] & kinds[j]) for i in range(len(kinds)) for j in range(i + 1, len(kinds))):
            return True
    if all(b.get("type") == "object" or "properties" in b for b in resolved):
        return _discriminated(resolved)
    return False
