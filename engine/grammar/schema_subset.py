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


def check_schema_subset(schema: Any, pointer: str = "") -> None:
    """Raises SchemaSubsetError for the first keyword Tessera cannot enforce (depth first)."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaSubsetError(pointer, "", f"a schema must be an object or a boolean, got {type(schema).__name__}")
    _check_node(schema, pointer)
    for key in _ONE:
        if isinstance(schema.get(key), (dict, bool)):
            check_schema_subset(schema[key], f"{pointer}/{key}")
    for key in _MAP:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                if key == "dependentSchemas":
                    continue  # already refused above
                check_schema_subset(sub, f"{pointer}/{key}/{_escape(name)}")
    for key in _LIST:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                check_schema_subset(sub, f"{pointer}/{key}/{i}")


def _check_node(schema: dict[str, Any], pointer: str) -> None:
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
    if isinstance(schema.get("oneOf"), list) and len(schema["oneOf"]) > 1:
        refuse("oneOf", "exclusive alternatives cannot be enforced; use 'anyOf' when the branches are disjoint")
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
