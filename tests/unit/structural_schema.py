"""Validate a custom resource against its CRD's schema offline, as the API server would.

A CRD schema is a Kubernetes structural schema (OpenAPI v3 plus `x-kubernetes-*` extensions).
`validator_for` turns one into a Draft 2020-12 JSON Schema validator that judges a manifest the
way `kubectl apply` does with its default strict field validation. k8s/schemas/README.md lists
each rule. CEL rules (`x-kubernetes-validations`) are beyond jsonschema. `cel_rules` finds them
so the tests can show none of them applies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema

FieldPath = tuple[str, ...]  # property names; "*" stands for any list item or map value


def strict_json_schema(schema: dict) -> dict:
    """The structural schema as JSON Schema; the CRD's own keywords are kept as they are."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict_json_schema(s) for name, s in out["properties"].items()}
        # The API server reports a field the schema doesn't list as unknown (kubectl's strict
        # field validation) or drops it silently; either way the field has no effect.
        preserves_unknown = out.get("x-kubernetes-preserve-unknown-fields", False)
        if "additionalProperties" not in out and not preserves_unknown:
            out["additionalProperties"] = False
    for keyword in ("items", "additionalProperties", "not"):
        if isinstance(out.get(keyword), dict):
            out[keyword] = strict_json_schema(out[keyword])
    for keyword in ("anyOf", "allOf", "oneOf"):
        if keyword in out:
            out[keyword] = [strict_json_schema(s) for s in out[keyword]]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def unique_list_entries(
    validator: Any, list_type: str, instance: Any, schema: dict
) -> Iterator[jsonschema.ValidationError]:
    """`x-kubernetes-list-type`: map lists are keyed by their map keys, with the keys' defaults
    applied (a port's protocol is TCP unless given), and set lists hold distinct items."""
    if list_type not in ("map", "set") or not validator.is_type(instance, "array"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    fields = schema.get("items", {}).get("properties", {})
    seen = set()
    for item in instance:
        if list_type == "map" and isinstance(item, dict):
            item = [item.get(key, fields.get(key, {}).get("default")) for key in keys]
        identity = json.dumps(item, sort_keys=True)
        if identity in seen:
            yield jsonschema.ValidationError(f"duplicate entry {identity} in a {list_type} list")
        seen.add(identity)


def _fits(bits: int):
    # KubeRay decodes these fields into Go integers of this size; a bigger number breaks that.
    return lambda value: not isinstance(value, int) or -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


INTEGER_FORMATS = jsonschema.FormatChecker(formats=())
INTEGER_FORMATS.checks("int32")(_fits(32))
INTEGER_FORMATS.checks("int64")(_fits(64))

CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-list-type": unique_list_entries}
)


def validator_for(structural: dict) -> jsonschema.protocols.Validator:
    schema = strict_json_schema(structural)
    CRDValidator.check_schema(schema)
    return CRDValidator(schema, format_checker=INTEGER_FORMATS)


def cel_rules(schema: dict, path: FieldPath = ()) -> Iterator[tuple[FieldPath, str]]:
    """Every `x-kubernetes-validations` rule with the path of the field it sits on."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule["rule"]
    for name, sub in schema.get("properties", {}).items():
        yield from cel_rules(sub, (*path, name))
    for keyword in ("items", "additionalProperties"):
        if isinstance(schema.get(keyword), dict):
            yield from cel_rules(schema[keyword], (*path, "*"))


def values_at(document: Any, path: FieldPath) -> Iterator[Any]:
    """The values a document sets at a path from `cel_rules`."""
    if not path:
        yield document
        return
    name, rest = path[0], path[1:]
    if name == "*":
        children = document.values() if isinstance(document, dict) else document
        for child in children if isinstance(document, dict | list) else ():
            yield from values_at(child, rest)
    elif isinstance(document, dict) and name in document:
        yield from values_at(document[name], rest)
