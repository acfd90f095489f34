"""Make rendered items conform to the spec's item schema of the operation that serves them.

The spec (spec.py, derived from Pipedrive's OpenAPI files) marks most properties non-nullable although
Pipedrive sends `null` for unset values (an open deal's `won_time`, a person without a birthday).

v2 follows Pipedrive: an unset scalar or object property is rendered as `null` whatever the spec says, so
every property the operation lists is present in every item. The exceptions are the kinds for which null
would be a wrong type rather than "not set": a non-nullable boolean or array whose value is null is left
out (records always carry a real value for those; an empty list is `[]`).
v1 follows the v1 reference, which a strict OpenAPI validator checks: a null whose schema is not nullable
is left out, so every property present has exactly the spec's JSON type. Both hold at every nesting level
(address objects, participants, ...).

Items keep only the properties the spec declares, plus, on request, `include_fields` extras and, in v1
(leads), the custom-field keys at the root: 40-hex hashes and their `_currency`/`_until`/... siblings.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from . import spec

# JSON types whose "not set" Pipedrive renders as null (v2), whether or not the spec says nullable.
NULL_WHEN_UNSET = frozenset({"string", "integer", "number", "object", "any"})


@cache
def item_schema(api: str, path: str) -> dict[str, Any] | None:
    """Declared item properties of a GET operation (None when the spec gives none)."""
    op = spec.operation(api, "GET", path)
    return op.item_properties if op else None


# a custom field's key in a v1 record: its 40-hex hash, or the hash and a part (`_currency`, `_until` ...)
HASH_KEY = re.compile(r"^[0-9a-f]{40}(_[a-z_0-9]+)?$")
Plan = dict[str, tuple[bool, Any, Any]]  # name -> (null allowed, nested object plan, array item plan)
_plans: dict[tuple[int, str], Plan] = {}


def _null_allowed(node: dict[str, Any], api: str) -> bool:
    if node.get("nullable"):
        return True
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return api == "v2" and all(k in NULL_WHEN_UNSET for k in kinds)


def plan(props: dict[str, Any], api: str) -> Plan:
    """Per-schema lookup table, built once (spec schemas live as long as the process)."""
    found = _plans.get((id(props), api))
    if found is None:
        found = {}
        for name, node in props.items():
            items = node.get("items") or {}
            found[name] = (
                _null_allowed(node, api),
                plan(node["properties"], api) if node.get("properties") else None,
                plan(items["properties"], api) if items.get("properties") else None,
            )
        _plans[(id(props), api)] = found
    return found


def conform(
    obj: dict[str, Any], props: dict[str, Any], api: str, extras: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """`obj` with only the declared properties (+ `extras`), nulls as the api renders them (see above)."""
    return apply(obj, plan(props, api), api == "v1", extras)


def apply(
    obj: dict[str, Any], schema: Plan, keep: bool, extras: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """`conform` with a prebuilt plan; `keep`: keep undeclared custom-field hash keys (v1)."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        entry = schema.get(k)
        if entry is None:
            if (keep and HASH_KEY.match(k)) or k in extras:
                out[k] = v
            continue
        if v is None:
            if entry[0]:
                out[k] = None
            continue
        if entry[1] is not None and type(v) is dict:
            v = apply(v, entry[1], keep)
        elif entry[2] is not None and type(v) is list:
            v = [apply(x, entry[2], keep) if type(x) is dict else x for x in v]
        out[k] = v
    return out
