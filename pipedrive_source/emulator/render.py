"""Records -> API JSON (v2 and v1 shapes), with per-record byte caching.

v2: timestamps RFC3339 (`2025-01-01T10:20:00Z`), custom fields inside `custom_fields` keyed by hash
with every active custom field present (null when unset), no internal `_` keys.
v1 (leads): custom field values at the record root in their flattened v1 form, only when set (as the
leads docs say); lead/label/call-log timestamps in the millisecond ISO form the v1 examples show, activity
types' in RFC3339, the classic v1 lists (notes, files, users, filters) in `YYYY-MM-DD HH:MM:SS`.

Where the v1 spec writes a timestamp two ways (activityTypes: schema `format: date-time`, example
'2019-10-04 16:24:55'; callLogs: `format: date-time` and example '2022-12-12T01:01:01.000Z', description
"Format: YYYY-MM-DD HH:MM:SS."), the schema's `format` wins: it is the normative part, what validators and
generated clients check; the example only decides the fractional seconds RFC3339 leaves open.

Related names embedded in v1 notes (`deal.title`, `person.name`, ...) are frozen when the note is written,
so a note's rendering changes only when the note itself changes (its `update_time` moves with it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from . import shape
from .clock import rfc3339, rfc3339_ms, v1_time
from .fields import FieldDef, flatten_v1, with_option_labels
from .shape import item_schema

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
    # the schema's `format: date-time` over the example's '2019-10-04 16:24:55' (module docstring)
    "activity_types": (frozenset({"add_time", "update_time"}), rfc3339),
}
V1_DEFAULT_TIMES = (frozenset({"add_time", "update_time"}), v1_time)
# v2 lists whose examples write their timestamps otherwise (project templates: '2023-09-14T08:14:40.000Z';
# a deal's discounts: `created_at` / `updated_at`)
V2_OWN_TIMES: dict[str, tuple[frozenset[str], Callable[[int | None], str | None]]] = {
    "project_templates": (frozenset({"add_time", "update_time"}), rfc3339_ms),
    "deal_discounts": (frozenset({"created_at", "updated_at"}), rfc3339),
}

# Properties a v2 list leaves out unless asked for with `include_fields` (the spec on deals' `source_lead_id`:
# "Only included when requested via include_fields parameter").
OPTIONAL_V2 = {"activities": frozenset({"attendees"}), "deals": frozenset({"source_lead_id"})}
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
    "project_templates": "/api/v2/projectTemplates",
    "deal_discounts": "/api/v2/deals/{id}/discounts",
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
    "teams": "/v1/legacyTeams",
}


@dataclass(frozen=True)
class Plan:
    """How one table's records render in one API (and with one `include_fields` set).

    Built once per field-catalog version: the declared properties with their null rule and nested plans
    (shape.py), which keys are timestamps and how they are written, and the active custom fields."""

    api: str
    props: shape.Plan
    times: frozenset[str]
    fmt: Callable[[int | None], str | None]
    custom: tuple[FieldDef, ...]
    codes: tuple[str, ...]
    keep: frozenset[str]  # undeclared keys kept because they were asked for (include_fields)


def plan_for(company: Company, table: str, api: str, include: frozenset[str] = frozenset()) -> Plan:
    key = (table, api, include)
    version = company.fields.version
    hit = company.render_plans.get(key)
    if hit is None or hit[0] != version:
        hit = (version, _build_plan(company, table, api, include))
        company.render_plans[key] = hit
    return hit[1]


def _build_plan(company: Company, table: str, api: str, include: frozenset[str]) -> Plan:
    props = item_schema(api, TABLE_PATH[table])
    if not props:
        raise LookupError(f"the spec gives no item schema for {table} ({TABLE_PATH[table]})")
    if table == "goals":
        props = props["goals"]["items"]["properties"]
    plan = shape.plan(props, api)
    if api == "v2":
        hidden = OPTIONAL_V2.get(table, frozenset()) - include
        plan = {k: e for k, e in plan.items() if k not in hidden}
    if api == "v2":
        times, fmt = V2_OWN_TIMES.get(table, (V2_TIMES, rfc3339))
    else:
        times, fmt = V1_TIMES.get(table, V1_DEFAULT_TIMES)
    entity = CUSTOM_ENTITY.get(table)
    custom = tuple(company.fields.custom(entity)) if entity else ()
    return Plan(api, plan, times, fmt, custom, tuple(fd.code for fd in custom), include)


def item(plan: Plan, rec: Record, only_custom: set[str] | None = None, option_labels: bool = False) -> dict:
    """A record as the API renders it: declared keys only, timestamps formatted, custom fields in the api's
    shape (v2: `custom_fields` keyed by hash; v1: flattened at the root), nulls per shape.py."""
    props = plan.props
    times, v1 = plan.times, plan.api == "v1"
    out: dict[str, Any] = {}
    for k, v in rec.items():
        entry = props.get(k)
        if entry is None:
            if k == "custom_fields" and v1:
                for fd in plan.custom:
                    out.update(flatten_v1(fd, v.get(fd.code)))
            elif k in plan.keep:
                out[k] = v
            continue
        if v is None:
            if entry[0]:
                out[k] = None
            continue
        if k in times:
            v = plan.fmt(v)
        elif k == "custom_fields":
            v = _custom_v2(plan, v, only_custom, option_labels)
        elif entry[1] is not None and type(v) is dict:
            v = shape.apply(v, entry[1], v1)
        elif entry[2] is not None and type(v) is list:
            v = [shape.apply(x, entry[2], v1) if type(x) is dict else x for x in v]
        out[k] = v
    return out


def _custom_v2(
    plan: Plan, values: dict[str, Any], only: set[str] | None, option_labels: bool
) -> dict[str, Any]:
    if only is None and not option_labels:
        return {code: values.get(code) for code in plan.codes}
    out = {}
    for fd in plan.custom:
        if only is None or fd.code in only:
            v = values.get(fd.code)
            out[fd.code] = with_option_labels(fd, v) if option_labels else v
    return out


def record_bytes(company: Company, table: Table, rec: Record, api: str) -> bytes:
    """Default rendering of one record, cached until the record (or its field catalog) changes."""
    cached = table.cached(api, rec["id"])
    if cached is not None:
        return cached
    # orjson's result keeps its whole growth buffer allocated (~8 KB for a 2 KB record): cache an exact copy.
    data = bytes(memoryview(orjson.dumps(item(plan_for(company, table.name, api), rec))))
    table.remember(api, rec["id"], data)
    return data
