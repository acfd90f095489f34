"""Make rendered items conform to the spec's item schema of the operation that serves them.

The spec (spec.py, derived from Pipedrive's OpenAPI files) marks most properties non-nullable although
Pipedrive sends `null` for unset values (an open deal's `won_time`, a person without a birthday). The
emulator resolves that conflict in favour of the spec: a property whose value is null and whose schema is
not nullable is left out of the item, so every property present has exactly the spec's JSON type. That
holds at every nesting level (address objects, participants, ...).

v2 items keep only the properties the spec declares (plus, on request, `include_fields` extras); v1 items
keep undeclared keys (custom-field hashes and their `_currency`/`_until` siblings on leads).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from . import spec


@cache
def item_schema(api: str, path: str) -> dict[str, Any] | None:
    """Declared item properties of a GET operation (None when the spec gives none)."""
    op = spec.operation(api, "GET", path)
    return op.item_properties if op else None


def conform(
    obj: dict[str, Any], props: dict[str, Any], keep_undeclared: bool, extras: frozenset[str] = frozenset()
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        node = props.get(k)
        if node is None:
            if keep_undeclared or k in extras:
                out[k] = v
            continue
        if v is None:
            if node.get("nullable"):
                out[k] = None
            continue
        out[k] = _nested(v, node, keep_undeclared)
    return out


def _nested(v: Any, node: dict[str, Any], keep_undeclared: bool) -> Any:
    sub = node.get("properties")
    if sub and isinstance(v, dict):
        return conform(v, sub, keep_undeclared)
    items = node.get("items")
    if items and items.get("properties") and isinstance(v, list):
        return [conform(x, items["properties"], keep_undeclared) if isinstance(x, dict) else x for x in v]
    return v
