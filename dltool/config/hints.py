"""Config errors in the user's words: "did you mean" for a misspelt key or value, and the form a field takes."""

from __future__ import annotations

import difflib
import re
from typing import Any


def closest(word: Any, choices) -> str | None:
    """The choice a misspelling most likely meant (difflib's ratio, case folded), or None when none is close."""
    if not isinstance(word, str):
        return None
    folded = {str(c).lower(): str(c) for c in choices}
    match = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def field_schema(loc: list, data: Any) -> dict | None:
    """The JSON Schema node of the field at `loc` (pydantic's error location) in the experiment config, following
    the reader union by the YAML's own `reader:` value; None where the path leaves the schema."""
    from dltool.config.models import ExperimentConfig

    schema = ExperimentConfig.model_json_schema()
    defs = schema.get("$defs", {})
    node: dict | None = schema
    value = data
    for part in loc:
        node = _object_of(node, value, defs)
        if node is None:
            return None
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            node = node.get("items") if isinstance(node.get("items"), dict) else None
            value = value[int(part)] if isinstance(value, list) and int(part) < len(value) else None
            continue
        properties = node.get("properties", {})
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
        value = value.get(part) if isinstance(value, dict) else None
    return _resolve(node, defs) if node is not None else None


def known_keys(loc: list, data: Any) -> list[str]:
    """The keys the mapping at `loc` takes (empty when it takes any key or the path is not in the schema)."""
    from dltool.config.models import ExperimentConfig

    parent = field_schema(loc, data) if loc else ExperimentConfig.model_json_schema()
    if parent is None:
        return []
    schema = ExperimentConfig.model_json_schema()
    node = _object_of(parent, _value_at(data, loc), schema.get("$defs", {}))
    return list(node.get("properties", {})) if node else []


def choices_in(expected: str) -> list[str]:
    """The quoted choices of a pydantic message such as "'auto', 'mlp' or 'tabular'"."""
    return re.findall(r"'([^']*)'", expected)


def _value_at(data: Any, loc: list) -> Any:
    for part in loc:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and str(part).isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _resolve(node: dict, defs: dict) -> dict:
    while "$ref" in node:
        node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _object_of(node: dict | None, value: Any, defs: dict) -> dict | None:
    """The object (or array) schema a field holds: a nullable field's non-null branch, and of a union the branch its
    value selects by discriminator (reader: csv), else the first object branch."""
    if node is None:
        return None
    node = _resolve(node, defs)
    branches = node.get("anyOf") or node.get("oneOf")
    if not branches:
        return node
    for branch in branches:
        branch = _resolve(branch, defs)
        mapping = branch.get("discriminator", {}).get("mapping")
        if mapping:
            tag = value.get(branch["discriminator"]["propertyName"]) if isinstance(value, dict) else None
            if tag in mapping:
                return _resolve({"$ref": mapping[tag]}, defs)
        inner = _object_of(branch, value, defs) if ("anyOf" in branch or "oneOf" in branch) else branch
        if inner is not None and inner.get("type") in ("object", "array") or (inner or {}).get("properties"):
            return inner
    return None
