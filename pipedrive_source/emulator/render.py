"""Records -> API JSON (v2 and v1 shapes), with per-record byte caching.

v2: timestamps RFC3339 (`2025-01-01T10:20:00Z`), custom fields inside `custom_fields` keyed by hash
with every active custom field present (null when unset), no internal `_` keys.
v1 (leads): custom field values at the record root in their flattened v1 form, only when set (as the
leads docs say); lead/label/call-log timestamps in the millisecond ISO form the v1 examples show, the
classic v1 lists (notes, files, users, activity types, filters) in `YYYY-MM-DD HH:MM:SS`.

Related names embedded in v1 notes (`deal.title`, `person.name`, ...) are frozen when the note is written,
so a note's rendering changes only when the note itself changes (its `update_time` moves with it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .clock import rfc3339, rfc3339_ms, v1_time
from .fields import FieldDef, flatten_v1, with_option_labels
from .shape import conform, item_schema

if TYPE_CHECKING:
    from .company import Company
    from .store import Record, Table

V2_TIMES = frozenset(
    {
        "add_time",
        "update_time",
        "stage_change_time",
        "close_time",
        "won_time",
        "lost_time",
        "marked_as_done_time",
        "status_change_time",
        "archive_time",
    }
)
V1_TIMES: dict[str, tuple[frozenset[str], Callable[[int | None], str | None]]] = {
    "leads": (frozenset({"add_time", "update_time"}), rfc3339_ms),
    "lead_labels": (frozenset({"add_time", "update_time"}), rfc3339_ms),
    "call_logs": (frozenset({"start_time", "end_time"}), rfc3339_ms),
    "users": (frozenset({"last_login", "created", "modified"}), v1_time),
    # the activityTypes schema declares `format: date-time` for its timestamps
    "activity_types": (frozenset({"add_time", "update_time"}), rfc3339),
}
V1_DEFAULT_TIMES = (frozenset({"add_time", "update_time"}), v1_time)

# Properties a v2 list leaves out unless asked for with `include_fields`.
OPTIONAL_V2 = {"activities": frozenset({"attendees"})}
CUSTOM_ENTITY = {
    "deals": "deal",
    "persons": "person",
    "organizations": "organization",
    "products": "product",
    "projects": "project",
    "leads": "deal",
}


# The list operation whose item schema each table's records follow.
TABLE_PATH = {
    "activities": "/api/v2/activities",
    "deals": "/api/v2/deals",
    "deal_products": "/api/v2/deals/products",
    "deal_installments": "/api/v2/deals/installments",
    "persons": "/api/v2/persons",
    "organizations": "/api/v2/organizations",
    "products": "/api/v2/products",
    "product_variations": "/api/v2/products/{id}/variations",
    "pipelines": "/api/v2/pipelines",
    "stages": "/api/v2/stages",
    "projects": "/api/v2/projects",
    "tasks": "/api/v2/tasks",
    "boards": "/api/v2/boards",
    "phases": "/api/v2/phases",
    "leads": "/v1/leads",
    "lead_labels": "/v1/leadLabels",
    "lead_sources": "/v1/leadSources",
    "notes": "/v1/notes",
    "files": "/v1/files",
    "users": "/v1/users",
    "call_logs": "/v1/callLogs",
    "activity_types": "/v1/activityTypes",
    "currencies": "/v1/currencies",
    "filters": "/v1/filters",
    "roles": "/v1/roles",
    "permission_sets": "/v1/permissionSets",
    "goals": "/v1/goals/find",
}


def finish(
    table: str, api: str, item: dict[str, Any], requested: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Conform a rendered item to its operation's item schema (see shape.py)."""
    props = item_schema(api, TABLE_PATH[table])
    if props and table == "goals":
        props = props["goals"]["items"]["properties"]
    if not props:
        return item
    return conform(item, props, api, extras=requested)


def v2_dict(
    rec: Record,
    table: str,
    custom: list[FieldDef] | None,
    *,
    include: frozenset[str] = frozenset(),
    only_custom: set[str] | None = None,
    option_labels: bool = False,
) -> dict[str, Any]:
    optional = OPTIONAL_V2.get(table, frozenset()) - include
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if k[0] == "_" or k in optional:
            continue
        if k in V2_TIMES:
            v = rfc3339(v)
        elif k == "custom_fields":
            v = _custom_v2(v, custom or [], only_custom, option_labels)
        out[k] = v
    return out


def _custom_v2(
    values: dict[str, Any], custom: list[FieldDef], only: set[str] | None, option_labels: bool
) -> dict[str, Any]:
    out = {}
    for fd in custom:
        if only is not None and fd.code not in only:
            continue
        v = values.get(fd.code)
        out[fd.code] = with_option_labels(fd, v) if option_labels else v
    return out


def v1_dict(rec: Record, table: str, custom: list[FieldDef] | None) -> dict[str, Any]:
    times, fmt = V1_TIMES.get(table, V1_DEFAULT_TIMES)
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if k[0] == "_":
            continue
        if k == "custom_fields":
            for fd in custom or ():
                out.update(flatten_v1(fd, v.get(fd.code)))
            continue
        out[k] = fmt(v) if k in times else v
    return out


def custom_defs(company: Company, table: str) -> list[FieldDef] | None:
    entity = CUSTOM_ENTITY.get(table)
    return company.fields.custom(entity) if entity else None


def record_bytes(company: Company, table: Table, rec: Record, api: str) -> bytes:
    """Default rendering of one record, cached until the record (or its field catalog) changes."""
    cached = table.cached(api, rec["id"])
    if cached is not None:
        return cached
    custom = custom_defs(company, table.name)
    d = v2_dict(rec, table.name, custom) if api == "v2" else v1_dict(rec, table.name, custom)
    data = orjson.dumps(finish(table.name, api, d))
    table.remember(api, rec["id"], data)
    return data
