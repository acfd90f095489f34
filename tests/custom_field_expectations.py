"""What a resolved record must look like, derived from the emulator's snapshot and field definitions alone.

Independent of the resolver: the documented rules (enum -> option label, set -> labels, monetary -> value +
currency, ranges -> start + until, address -> formatted + parts, typed dates/times) written out plainly.
The column each field lands in comes from the synced `custom_fields` table (naming is tested on its own).
"""

from __future__ import annotations

import math
import re
from datetime import date, time
from typing import Any

V2_FIELDS_OF = {
    "deals": "deal_fields",
    "persons": "person_fields",
    "organizations": "organization_fields",
    "products": "product_fields",
    "projects": "project_fields",
    "activities": "activity_fields",
}
V1_FIELDS_OF = {"leads": ("deal_fields", "lead_fields"), "notes": ("note_fields",)}  # leads inherit deals'
COMPOSITE = {"monetary", "daterange", "timerange", "address"}
CHANGE_KEY = re.compile(r"([0-9a-f]{40})(_\w+)?")  # a custom field's hash, or a composite part of it


def label(fd: dict[str, Any], option_id: Any) -> str | None:
    """The option's label; v1 definitions also name deleted options (`options_deleted`)."""
    options = (*(fd.get("options") or ()), *(fd.get("options_deleted") or ()))
    return next((o["label"] for o in options if str(o["id"]) == str(option_id)), None)


def shown(fd: dict[str, Any], option_id: Any) -> str:
    """What the label column holds: the label, or the id as text where no definition names it (a deleted
    option, which v2 no longer lists)."""
    return label(fd, option_id) or str(option_id)


def number(value: Any, kind: type = float) -> Any:
    """A number's value; a text that is no finite number ("nan", "1e999") is kept as it is (`__v_text`)."""
    try:
        parsed = kind(value)
    except ValueError:
        return value
    return parsed if math.isfinite(parsed) else value


def expected_columns(fd: dict[str, Any], col: str, value: Any) -> dict[str, Any]:
    """What the warehouse row must hold for one custom value (v2 shape), by the documented rules."""
    t = fd["field_type"]
    if value is None:
        return {col: None}
    if t == "monetary":
        return {col: number(value["value"]), f"{col}_currency": value["currency"]}
    if t == "daterange":
        return {col: date.fromisoformat(value["value"]), f"{col}_until": date.fromisoformat(value["until"])}
    if t == "timerange":
        return {col: time.fromisoformat(value["value"]), f"{col}_until": time.fromisoformat(value["until"])}
    if t == "address":
        parts = {f"{col}_{k}": v for k, v in value.items() if k not in ("value", "formatted_address")}
        return {col: value.get("formatted_address") or value["value"], **parts}
    if t == "date":
        return {col: date.fromisoformat(value)}
    if t == "time":
        return {col: time.fromisoformat(value)}
    if t == "enum":
        return {col: shown(fd, value)}
    if t == "set":
        ids = value.split(",") if isinstance(value, str) else value  # v1 "11,12", v2 [11, 12]
        return {col: [shown(fd, i) for i in ids]}
    if t == "double":
        return {col: number(value)}
    if t == "int":
        return {col: number(value, int)}
    return {col: value}


def custom_definitions(snapshot: Any, table: str) -> dict[str, dict[str, Any]]:
    """{field hash: definition} of `table`'s custom fields; `snapshot(name)` reads the emulator's truth."""
    if table in V2_FIELDS_OF:
        return {f["field_code"]: f for f in snapshot(V2_FIELDS_OF[table]) if f.get("is_custom_field")}
    defs: dict[str, dict[str, Any]] = {}
    for fields in V1_FIELDS_OF.get(table, ()):
        for f in snapshot(fields):
            code = f.get("field_code") or f.get("key")
            if f.get("is_custom_field") or f.get("edit_flag"):
                defs[code] = f
    return defs


def readable(
    row: dict[str, Any], defs: dict[str, dict[str, Any]], columns: dict[str, str], named_only: bool = False
) -> dict[str, Any]:
    """`row` with its custom values (v2 `custom_fields` or v1 root hash keys) in their readable columns;
    `named_only`: leave out the values of fields the sync has not named a column for yet (a run stopped
    before it loaded them), which otherwise is an error."""
    out = dict(row)
    values = out.pop("custom_fields", None)
    if values is None:
        values = {code: _pop_v1(out, code, fd) for code, fd in defs.items() if code in out}
    for code, value in values.items():
        if named_only and code not in columns:
            continue
        out.update(expected_columns(defs[code], columns[code], value))
    return out


def _pop_v1(row: dict[str, Any], code: str, fd: dict[str, Any]) -> Any:
    """v1 keeps a composite's parts in `<hash>_<part>` siblings: gather them into the v2 shape."""
    value = row.pop(code)
    if fd["field_type"] not in COMPOSITE:
        return value
    parts = {key[41:]: row.pop(key) for key in [k for k in row if k.startswith(f"{code}_")]}
    return None if value is None else {"value": value, **parts}


def flow_change(
    data: dict[str, Any], defs: dict[str, dict[str, Any]], columns: dict[str, str]
) -> dict[str, Any]:
    """A deal flow field change's `column_name`, `old_value` and `new_value` as `deal_flow` holds them: a
    custom field's change names its `deals` column (a composite part's column for `<hash>_<part>`), an
    enum or set field's option ids (a set's "11,12") become labels (joined by ", "; an id the field does
    not list stays); a built-in or unlisted field's change has no column name and its values as text."""
    old, new = (None if v is None else str(v) for v in (data.get("old_value"), data.get("new_value")))
    custom = CHANGE_KEY.fullmatch(data["field_key"])
    if custom is None or custom[1] not in defs or custom[1] not in columns:
        return {"column_name": None, "old_value": old, "new_value": new}
    fd = defs[custom[1]]
    if fd.get("options") and custom[2] is None:
        old, new = (None if v is None else ", ".join(shown(fd, i) for i in v.split(",")) for v in (old, new))
    return {"column_name": columns[custom[1]] + (custom[2] or ""), "old_value": old, "new_value": new}


def _labels(fd: dict[str, Any], ids: str | None) -> str | None:
    return None if ids is None else ", ".join(shown(fd, i) for i in ids.split(","))
