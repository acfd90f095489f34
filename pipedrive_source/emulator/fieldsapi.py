"""Rendering of field definitions: v2 `*Fields` items and v1 `noteFields` items."""

from __future__ import annotations

from typing import Any

from .clock import rfc3339
from .fields import FieldDef

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
        return item
    item = {
        "field_name": fd.name,
        "field_code": fd.code,
        "description": fd.description,
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
