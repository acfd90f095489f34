"""Field definitions from Pipedrive's `*Fields` endpoints, v2 and v1 shapes, as one small dataclass.

v2 (`/api/v2/dealFields` ...): field_code, field_name, field_type, options [{id, label}], subfields
[{field_code, ...}], is_custom_field.
v1 (`/v1/leadFields`, `/v1/noteFields` ...): key, name, field_type, options [{id, label}], options_deleted,
subfields; a custom field is told by its 40-hex key (v1 has no is_custom_field flag).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipedrive_source.naming import HASH_RE


@dataclass(frozen=True)
class FieldDef:
    code: str
    name: str | None
    type: str
    is_custom: bool
    options: tuple[tuple[Any, str], ...] = ()  # (option id, label), as the API lists them
    deleted_options: tuple[tuple[Any, str], ...] = ()  # v1 `options_deleted`: ids old records may still hold
    subfields: tuple[str, ...] = field(default=())  # subfield codes without the parent prefix


def _options(raw: Any, label_key: str = "label") -> tuple[tuple[Any, str], ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        (o["id"], o.get(label_key) if o.get(label_key) is not None else o.get("name"))
        for o in raw
        if isinstance(o, Mapping) and "id" in o
    )


def _subfield_codes(parent: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    codes = []
    for sub in raw:
        if not isinstance(sub, Mapping):
            continue
        code = sub.get("field_code") or sub.get("key")
        if not code:
            continue
        if code.startswith(parent + "_"):  # v1 style: "<hash>_street_number"
            code = code[len(parent) + 1 :]
        codes.append(code)
    return tuple(codes)


def parse_field(raw: Mapping[str, Any]) -> FieldDef | None:
    """One field definition of either API version; None for something that is not a field."""
    code = raw.get("field_code") or raw.get("key")
    if not isinstance(code, str) or not code:
        return None
    name = raw.get("field_name") if "field_code" in raw else raw.get("name")
    is_custom = raw.get("is_custom_field")
    if is_custom is None:
        is_custom = HASH_RE.fullmatch(code) is not None
    return FieldDef(
        code=code,
        name=name,
        type=str(raw.get("field_type") or ""),
        is_custom=bool(is_custom),
        options=_options(raw.get("options")),
        deleted_options=_options(raw.get("options_deleted")),
        subfields=_subfield_codes(code, raw.get("subfields")),
    )


def parse_fields(raw_fields: Iterable[Mapping[str, Any] | FieldDef]) -> list[FieldDef]:
    """Parse a fields endpoint's `data` (pages concatenated); later duplicates of a code win."""
    by_code: dict[str, FieldDef] = {}
    for raw in raw_fields:
        fd = raw if isinstance(raw, FieldDef) else parse_field(raw)
        if fd is not None:
            by_code[fd.code] = fd
    return list(by_code.values())


def without_fields(body: Mapping[str, Any]) -> str | None:
    """What is wrong with the first page of a `*Fields` list, or None. Every company's list holds the
    entity's built-in fields (a deal's `title` and `value`, an activity's `subject`: "metadata about all
    activity fields in the company", custom or not), so a 200 without a single field is Pipedrive failing,
    not a company without fields: trusted, the custom fields loaded under their 40-character hash names
    and were renamed once the definitions came back. Retried, then handled as a field list that failed."""
    if body.get("data"):
        return None
    return "a list of field definitions without a single field (every company's has the built-in ones)"
