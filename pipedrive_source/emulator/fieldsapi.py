"""Rendering of field definitions: v2 `*Fields` items and v1 `noteFields` items."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .clock import rfc3339
from .fields import FieldDef
from .shape import conform, item_schema

if TYPE_CHECKING:
    from .company import Company

# v2 field types that carry options in the fields endpoint (custom enum/set and built-in option fields).
_V2_OPTIONAL_NAMESPACES = ("ui_visibility", "important_fields", "required_fields")


def _options_v2(fd: FieldDef) -> list[dict[str, Any]] | None:
    if fd.options is None:
        return None
    return [
        {
            "id": o["id"],
            "label": o["label"],
            "color": o.get("color"),
            "update_time": rfc3339(o.get("update_time")),
            "add_time": rfc3339(o.get("add_time")),
        }
        for o in fd.options
    ]


def _namespace(fd: FieldDef, name: str) -> dict[str, Any]:
    if name == "ui_visibility":
        return {"add_visible_flag": True, "details_visible_flag": True}
    return {"enabled": False, "stage_ids": []}


def field_item(fd: FieldDef, api: str = "v2", include: tuple[str, ...] = ()) -> dict[str, Any]:
    if api == "v1":
        item: dict[str, Any] = {
            "id": fd.id,
            "key": fd.code,
            "name": fd.name,
            "field_type": fd.field_type,
            "active_flag": True,
            "edit_flag": fd.is_custom,
            "bulk_edit_allowed": True,
            "mandatory_flag": False,
        }
        if fd.options is not None:
            item["options"] = [{"id": o["id"], "label": o["label"]} for o in fd.options]
        if fd.deleted_options:  # v1: "only present when there is at least 1 deleted option"
            item["options_deleted"] = [{"id": o["id"], "label": o["label"]} for o in fd.deleted_options]
        return item
    item = {
        "field_name": fd.name,
        "field_code": fd.code,
        "description": fd.description or f"{fd.name} of the {fd.entity}",
        "field_type": fd.field_type,
        "options": _options_v2(fd),
        "subfields": fd.subfields(),
        "is_custom_field": fd.is_custom,
        "is_optional_response_field": fd.optional_response,
    }
    for name in _V2_OPTIONAL_NAMESPACES:
        if name in include:
            item[name] = _namespace(fd, name)
    return item


# connector table -> (api, path of the fields endpoint, entity whose definitions it lists)
FIELD_ENDPOINTS = {
    "activity_fields": ("v2", "/api/v2/activityFields", "activity"),
    "deal_fields": ("v2", "/api/v2/dealFields", "deal"),
    "person_fields": ("v2", "/api/v2/personFields", "person"),
    "organization_fields": ("v2", "/api/v2/organizationFields", "organization"),
    "product_fields": ("v2", "/api/v2/productFields", "product"),
    "project_fields": ("v2", "/api/v2/projectFields", "project"),
    "note_fields": ("v1", "/v1/noteFields", "note"),
    "lead_fields": ("v1", "/v1/leadFields", "lead"),
}


def field_defs(company: Company, table: str) -> list[FieldDef]:
    """Definitions a fields endpoint lists; leads list their built-ins plus the deal custom fields."""
    entity = FIELD_ENDPOINTS[table][2]
    defs = company.fields.listed(entity)
    if entity == "lead":
        labels = [{"id": r["id"], "label": r["name"]} for r in company.t["lead_labels"].rows.values()]
        defs = [replace(fd, options=labels) if fd.code == "label_ids" else fd for fd in defs]
        defs += company.fields.custom("deal")
    return defs


def field_items(company: Company, table: str, include: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The items of a fields endpoint, conformed to its item schema."""
    api, path, _ = FIELD_ENDPOINTS[table]
    props = item_schema(api, path)
    items = [field_item(fd, api, include) for fd in field_defs(company, table)]
    if not props:
        return items
    return [conform(i, props, api, extras=frozenset(include)) for i in items]
