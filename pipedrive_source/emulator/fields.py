"""Field definitions (built-in and custom) and custom-field values in their v2 and v1 shapes.

The v2 `*Fields` endpoints describe each field with `field_code` (a 40-hex hash for custom fields),
`field_name`, `field_type`, `options` (enum/set and built-in option fields) and `subfields` (address,
monetary). Custom field *values* live in a record's `custom_fields` dict in their v2 shape:

| type | v2 value (inside `custom_fields`) | v1 value (leads: hash keys at the record root) |
|---|---|---|
| varchar, varchar_auto, varchar_options, text, phone | string | same |
| int / double | number | same |
| boolean | true/false | same |
| date / time | `YYYY-MM-DD` / `HH:MM:SS` | same |
| daterange / timerange | `{"value": start, "until": end}` | `<hash>`: start, `<hash>_until`: end |
| monetary | `{"value": n, "currency": "EUR"}` | `<hash>`: n, `<hash>_currency`: "EUR" |
| address | `{"value", <subfield codes>...}` | `<hash>`: value, `<hash>_<subfield>` siblings |
| enum | option id (int) | option id (int) |
| set | list of option ids | comma string `"11,12"` |
| user / org / people | referenced id (int) | same |

Decisions where the spec is silent: range objects use the v1 suffix names (`value` + `until`), as
monetary and address do (`value` + `currency`, `value` + subfield codes); no timezone member is emitted.
A deleted field disappears from the fields endpoint and from every record's rendering (its stored values
are kept but never shown again). A deleted option leaves the field's `options` (v1 lists it under
`options_deleted`, v2 not at all); records holding its id keep it and are not stamped. Leads have no
fields of their own: they inherit the deal fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

ADDRESS_SUBFIELDS = (
    ("value", "Address value"),
    ("street_number", "House number"),
    ("route", "Street/road name"),
    ("subpremise", "Apartment/suite"),
    ("locality", "District"),
    ("admin_area_level_1", "State/province"),
    ("admin_area_level_2", "County"),
    ("country", "Country"),
    ("postal_code", "Postal code"),
    ("formatted_address", "Formatted address"),
)

# Every custom field type the v2 field schema lists for user-created fields, plus the legacy types
# (int, boolean, varchar_options) that older companies still carry.
CUSTOM_TYPES = (
    "varchar",
    "varchar_auto",
    "varchar_options",
    "text",
    "phone",
    "int",
    "double",
    "boolean",
    "monetary",
    "date",
    "daterange",
    "time",
    "timerange",
    "enum",
    "set",
    "address",
    "user",
    "org",
    "people",
)
OPTION_TYPES = ("enum", "set")


@dataclass
class FieldDef:
    entity: str
    code: str
    name: str
    field_type: str
    is_custom: bool
    id: int
    add_time: int
    update_time: int
    options: list[dict] | None = None
    description: str | None = None
    deleted_options: list[dict] = field(default_factory=list)  # v1 lists them as `options_deleted`
    deleted: bool = False
    optional_response: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def subfields(self) -> list[dict] | None:
        if self.field_type == "address":
            return [
                {"field_code": c, "field_name": f"{label} of {self.name}", "field_type": "varchar"}
                for c, label in ADDRESS_SUBFIELDS
            ]
        if self.field_type == "monetary":
            return [
                {"field_code": "value", "field_name": f"Amount of {self.name}", "field_type": "double"},
                {"field_code": "currency", "field_name": f"Currency of {self.name}", "field_type": "varchar"},
            ]
        return None

    def option_label(self, option_id: int) -> str | None:
        for o in self.options or ():
            if o["id"] == option_id:
                return o["label"]
        return None


def field_hash(seed: int, entity: str, name: str, ordinal: int) -> str:
    """Deterministic 40-hex custom field key (Pipedrive's are random; ours are stable per seed)."""
    return hashlib.sha1(f"{seed}:{entity}:{name}:{ordinal}".encode()).hexdigest()


def flatten_v1(fd: FieldDef, value: Any) -> list[tuple[str, Any]]:
    """The v1 root-level key/value pairs for one custom field value (leads)."""
    h, t = fd.code, fd.field_type
    if value is None:
        return []
    # a value of another shape than its type's (bad input a test put there) is served as it is
    if t == "set" and isinstance(value, list):
        return [(h, ",".join(str(v) for v in value))]
    if not (isinstance(value, dict) and "value" in value):
        return [(h, value)]
    if t == "monetary":
        return [(h, value["value"]), (f"{h}_currency", value.get("currency"))]
    if t in ("daterange", "timerange"):
        return [(h, value["value"]), (f"{h}_until", value.get("until"))]
    if t == "address":
        return [(h, value["value"])] + [(f"{h}_{k}", v) for k, v in value.items() if k != "value"]
    return [(h, value)]


def with_option_labels(fd: FieldDef, value: Any) -> Any:
    """v2 `include_option_labels=true`: enum/set values become `{id, label}` objects."""
    if value is None or fd.field_type not in OPTION_TYPES:
        return value
    if fd.field_type == "enum":
        return {"id": value, "label": fd.option_label(value)}
    return [{"id": v, "label": fd.option_label(v)} for v in value]


class FieldRegistry:
    """Field definitions per entity (deal, person, organization, product, activity, project, note)."""

    def __init__(self) -> None:
        self.by_entity: dict[str, list[FieldDef]] = {}
        self._next_id = 0
        self.version = 0  # bumped on every definition change
        self._custom: dict[str, tuple[int, list[FieldDef]]] = {}

    def add(self, fd: FieldDef) -> FieldDef:
        self.by_entity.setdefault(fd.entity, []).append(fd)
        self._next_id = max(self._next_id, fd.id)
        self.version += 1
        return fd

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def listed(self, entity: str) -> list[FieldDef]:
        """What the fields endpoint lists: every non-deleted definition, in creation order."""
        return [f for f in self.by_entity.get(entity, ()) if not f.deleted]

    def custom(self, entity: str) -> list[FieldDef]:
        """Active custom fields: the keys a record's `custom_fields` shows (memoized per version)."""
        hit = self._custom.get(entity)
        if hit is None or hit[0] != self.version:
            hit = (self.version, [f for f in self.by_entity.get(entity, ()) if f.is_custom and not f.deleted])
            self._custom[entity] = hit
        return hit[1]

    def find(self, entity: str, code: str) -> FieldDef | None:
        for f in self.by_entity.get(entity, ()):
            if f.code == code:
                return f
        return None

    def changed(self) -> None:
        self.version += 1
