"""Per-type value converters, compiled once per field so resolving a row is a dict lookup and a call.

A converter is `conv(value, row) -> None`: it writes the field's column(s) into `row`. Composite values
arrive as dicts: v2 gives them so (`{"value": 10, "currency": "EUR"}`); the resolver builds the same dict
from v1's root-level siblings (`<hash>`, `<hash>_currency`), so both API versions share one converter.
Parsers never raise: a value that does not parse is written as it came (dlt then keeps it in a variant
column instead of losing it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

from pipedrive_source import json_body
from pipedrive_source.field_defs import FieldDef
from pipedrive_source.naming import normalize

logger = logging.getLogger(__name__)

Converter = Callable[[Any, dict], None]
Parser = Callable[[Any], Any] | None
ExtraColumn = Callable[[str], str] | None  # a composite value's unexpected member -> the column it goes to

TEXT_TYPES = {"varchar", "text", "varchar_auto", "varchar_options", "phone"}
REF_TYPES = {"user", "org", "people", "deal", "lead", "project", "stage", "activity", "pipeline", "product"}
REFS_TYPES = {"deals", "projects", "leads", "persons", "orgs"}
ENUM_TYPES = {"enum", "visible_to", "status"}
SAME_KIND = {"int", "double", "date", "time", "daterange", "timerange", "monetary", "address", "set"}
ADDRESS_COMPONENTS = (
    "street_number",
    "route",
    "subpremise",
    "sublocality",
    "locality",
    "admin_area_level_1",
    "admin_area_level_2",
    "country",
    "postal_code",
)
START_KEYS = ("value", "start", "from")
UNTIL_KEYS = ("until", "end", "to")
TZ_NAME_KEYS = ("timezone_name", "timezone")
TZ_ID_KEYS = ("timezone_id",)
ALL_SUFFIXES = (
    "_currency",
    "_until",
    "_timezone",
    "_timezone_id",
    "_id",
    "_ids",
    *("_" + c for c in ADDRESS_COMPONENTS),
)


# --- scalar parsers (never raise) -------------------------------------------------------------------


def to_float(v: Any) -> Any:
    """A number as a float; one that reads as NaN or an infinity ("NaN", "inf", "1e999", an integer beyond
    a double) stays as it came, for the column's `__v_text` variant: a NaN in the column would make every
    SUM over it NaN."""
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return v
    return f if math.isfinite(f) else v


# dlt's writers fail on a whole number beyond 64 bits, and so every later run on the same record; dlt's
# coercion turns digits and whole floats back into such an int, so it goes to the `__v_text` variant column
# as the float's text ('1e+22', as Pipedrive's JSON gives any number beyond 64 bits). One beyond a double
# too (400 digits) has no float's text: it stays as it came, and the page's shaping moves such digits to
# `__v_text` itself (`arrow_pages._variants`)
_BIGINT_MIN, _BIGINT_END = -(2**63), 2**63


def to_int(v: Any) -> Any:
    kind = type(v)
    if kind is float:  # int() would cut 1.5 to 1: keep a fraction for dlt's variant column
        if not v.is_integer():
            return v
        return int(v) if _BIGINT_MIN <= v < _BIGINT_END else repr(v)
    try:
        whole = v if kind is int else int(v)
    except (TypeError, ValueError):
        f = to_float(v)
        return to_int(f) if isinstance(f, float) else v
    if _BIGINT_MIN <= whole < _BIGINT_END:
        return whole
    f = to_float(whole)
    return repr(f) if isinstance(f, float) else v


def to_bool(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if v in (1, 0):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.lower() in ("true", "1", "yes")
    return v


def to_date(v: Any) -> Any:
    if type(v) is not str:
        return number_apart(v) if type(v) in (int, float) else v
    try:
        return date.fromisoformat(v[:10])
    except ValueError:
        return v


def number_apart(v: int | float) -> dict[str, Any]:
    """A number where a date goes, as an object dlt and the Arrow pages flatten into the variant column dlt
    would name (`<column>__v_bigint`, `__v_double`; beyond 64 bits `__v_text`): given to a date column as it
    is, dlt's coercion read it as seconds since 1970 (20240101 loaded as 1970-08-23) and the number was
    lost. A time of day needs none: dlt's coercion refuses a number and keeps it in that variant itself.
    A built-in date or timestamp column's number goes the same way (`arrow_pages.numbers_as_text`,
    `PageShaper._variants`)."""
    if type(v) is float:
        return {"v_double": v}
    return {"v_bigint": v} if _BIGINT_MIN <= v < _BIGINT_END else {"v_text": str(v)}


def to_time(v: Any) -> Any:
    if type(v) is not str:
        return v
    try:
        return time.fromisoformat(v)
    except ValueError:
        return v


def to_ref(v: Any) -> Any:
    """A referenced record's id; v1 sometimes sends the record as `{"value": id, "name": ...}`. An object
    with neither stays as it came, for the column's `__v_json` variant: it was NULL, the value lost."""
    if isinstance(v, Mapping):
        v = v.get("value", v.get("id", v))
    if v is None:
        return v
    if isinstance(v, str) and not v.isdigit():
        return v  # lead ids are UUIDs
    return to_int(v)


def to_refs(v: Any) -> Any:
    if isinstance(v, str):
        v = [p for p in v.split(",") if p.strip()]
    if isinstance(v, list):
        return [to_ref(x) for x in v]
    return v


# --- option fields --------------------------------------------------------------------------------


def option_labels(fd: FieldDef) -> dict[Any, str]:
    """Option id -> label, keyed by the id as int and as str (v1 sends "12" where v2 sends 12)."""
    labels: dict[Any, str] = {}
    for oid, label in (*fd.deleted_options, *fd.options):
        labels[oid] = label
        labels[str(oid)] = label
        if isinstance(oid, str) and oid.isdigit():
            labels[int(oid)] = label
    return labels


def _option_id(v: Any) -> Any:
    """The id of an option value: `12`, `"12"` or v2's `{id, label}` (include_option_labels=true); an
    object without an id is its own (no option has it: `unknown` keeps it, not a NULL in its place)."""
    return v.get("id", v) if isinstance(v, Mapping) else v


def _label_of(get: Callable[[Any], str | None], v: Any) -> str | None:
    """The label of option value `v`, None when no option has its id (a list or an object is none)."""
    oid = _option_id(v)
    return None if isinstance(oid, (dict, list)) else get(oid)


def set_ids(v: Any) -> list:
    """A set's option ids: v2 `[11, 12]`, v1 `"11,12"`, a lone id, or objects with ids."""
    if type(v) is list:
        return v
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return [] if v is None else [v]


def _no_id(v: Any) -> bool:
    """Whether a set's member names no option at all: null, or a blank string."""
    return v is None or (type(v) is str and not v.strip())


Unknown = Callable[[Any], Any] | None  # an option id no label is known for -> what its column gets


def enum_converter(
    col: str, id_col: str | None, labels: dict[Any, str], unknown: Unknown = None
) -> Converter:
    get = labels.get

    def slow(v: Any) -> Any:
        label = _label_of(get, v)
        return label if label is not None or not isinstance(v, Mapping) else v.get("label")

    def conv(v: Any, row: dict) -> None:
        try:
            label = get(v)
        except TypeError:  # an unhashable value: an {id, label} object
            label = slow(v)
        if label is None and v is not None and unknown is not None:
            label = unknown(_option_id(v))
        row[col] = label
        if id_col is not None:
            row[id_col] = None if v is None else to_int(_option_id(v))

    return conv


def set_converter(
    col: str, ids_col: str | None, labels: dict[Any, str], unknown: Unknown = None
) -> Converter:
    get = labels.get

    def conv(v: Any, row: dict) -> None:
        if v is None:  # no child rows; writing None would leave dlt an untyped column to warn about
            return
        ids = set_ids(v)
        try:
            found = [get(i) for i in ids]
        except TypeError:  # an unhashable member: an {id, label} object, or a list where an id goes
            found = [_label_of(get, i) for i in ids]
        if None in found:  # an id without a label, or no id at all
            # no option, as a null in an option field, and as v1's "12,,13" drops its blank: a child row
            # of NULLs (or of the blank) was counted by every COUNT of the set's options
            kept = [k for k, i in enumerate(ids) if not _no_id(i)]
            if len(kept) < len(ids):
                found, ids = [found[k] for k in kept], [ids[k] for k in kept]
            if unknown is not None and None in found:
                found = [
                    unknown(_option_id(i)) if label is None else label
                    for label, i in zip(found, ids, strict=True)
                ]
        row[col] = found
        if ids_col is not None:
            row[ids_col] = [to_int(_option_id(i)) for i in ids]

    return conv


# --- scalar and composite fields ------------------------------------------------------------------


def to_json_text(v: Any) -> str:
    """A value of an unknown type as text: a string as it is, anything else as its JSON encoding.

    A `json` hint would send a scalar to a dlt variant column (`<column>__v_text`) and leave the announced
    column NULL; text keeps every value in the announced column."""
    return v if isinstance(v, str) else json_body.dumps(v)


def scalar_converter(col: str, parse: Parser) -> Converter:
    if parse is None:

        def conv(v: Any, row: dict) -> None:
            row[col] = v
    else:

        def conv(v: Any, row: dict) -> None:
            row[col] = v if v is None else parse(v)

    return conv


@dataclass(frozen=True)
class Part:
    keys: tuple[str, ...]  # where the part may sit in the value object, first non-null wins
    column: str
    parse: Parser
    declared: bool = True  # typed up front; undeclared columns appear only once a value arrives


def _first(v: Mapping, keys: tuple[str, ...]) -> Any:
    for k in keys:
        x = v.get(k)
        if x is not None:
            return x
    return None


def composite_converter(
    base: str, parts: tuple[Part, ...], parse_scalar: Parser, extra_column: ExtraColumn = None
) -> Converter:
    """A value object spread over its columns; a bare scalar lands in the base column. A member no part
    names goes to the column `extra_column` picks for it (default `<base>_<member>`)."""
    known = frozenset(k for p in parts for k in p.keys)
    # (first key, other keys, column, parser): most values sit under the first key, so try it alone first
    plan = tuple((p.keys[0], p.keys[1:], p.column, p.parse) for p in parts if p.declared)
    # undeclared parts (timezones) are written only when present: an all-null untyped column makes dlt warn
    optional = tuple((p.keys, p.column, p.parse) for p in parts if not p.declared)
    extra_cols: dict[str, str] = {}

    def write_extras(v: Mapping, row: dict) -> None:
        for k, x in v.items():
            if k in known:
                continue
            col = extra_cols.get(k)
            if col is None:
                col = extra_cols[k] = extra_column(k) if extra_column else normalize(f"{base}_{k}")
            if col not in row:  # never overwrite a column already there
                row[col] = x

    def conv(v: Any, row: dict) -> None:
        if type(v) is not dict:
            row[base] = v if v is None or parse_scalar is None else parse_scalar(v)
            return
        get = v.get
        for key, others, col, parse in plan:
            x = get(key)
            if x is None and others:
                x = _first(v, others)
            row[col] = x if x is None or parse is None else parse(x)
        for keys, col, parse in optional:
            x = _first(v, keys)
            if x is not None:
                row[col] = x if parse is None else parse(x)
        if not known.issuperset(v):
            write_extras(v, row)

    return conv


# --- compiling a field ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    conv: Converter
    columns: dict[str, str | None]  # column -> dlt data_type (None: a list, i.e. a child table)
    composite: bool  # the value may be an object spread over several columns
    # keys of that object (v1 sends them as `<hash>_<member>` siblings) -> the column each lands in
    members: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[Any, str] | None = None  # an enum or set field's labels by option id
    items: Mapping[str, str] = field(default_factory=dict)  # a list column -> its items' dlt data_type


SCALAR_KINDS: dict[str, tuple[Parser, str]] = {
    "text": (None, "text"),
    "int": (to_int, "bigint"),
    "double": (to_float, "double"),
    "bool": (to_bool, "bool"),
    "date": (to_date, "date"),
    "ref": (to_ref, "bigint"),
    "lead": (to_ref, "text"),
}


def kind_of(field_type: str) -> str:
    if field_type in TEXT_TYPES:
        return "text"
    if field_type == "boolean":
        return "bool"
    if field_type in SAME_KIND:
        return field_type
    if field_type in ENUM_TYPES:
        return "enum"
    if field_type == "lead":
        return "lead"
    if field_type in REF_TYPES:
        return "ref"
    if field_type in REFS_TYPES:
        return "refs"
    return "json"


def address_components(fd: FieldDef) -> tuple[str, ...]:
    """The definition's subfields plus Google's usual parts (values carry `sublocality` though the v2
    subfield lists omit it), so every address field has the same columns whichever API version sent it."""
    subs = [s for s in fd.subfields if s not in ("value", "formatted_address")]
    return tuple(dict.fromkeys([*subs, *ADDRESS_COMPONENTS]))


def suffixes_for(fd: FieldDef) -> tuple[str, ...]:
    """Suffixed columns a field of this type can produce besides its base column (reserved up front)."""
    kind = kind_of(fd.type)
    return {
        "monetary": ("_currency",),
        "daterange": ("_until",),
        "timerange": ("_until", "_timezone", "_timezone_id"),
        "time": ("_timezone", "_timezone_id"),
        "address": tuple("_" + normalize(c) for c in address_components(fd)),
        "enum": ("_id",),
        "set": ("_ids",),
    }.get(kind, ())


def _composite_parts(kind: str, base: str, fd: FieldDef) -> tuple[tuple[Part, ...], Parser]:
    # Pipedrive documents no timezone member in v2 values; v1 has `<hash>_timezone_id` on some accounts.
    tz = (
        Part(TZ_NAME_KEYS, base + "_timezone", None, False),
        Part(TZ_ID_KEYS, base + "_timezone_id", to_int, False),
    )
    if kind == "monetary":
        return (Part(("value",), base, to_float), Part(("currency",), base + "_currency", None)), to_float
    if kind == "daterange":
        return (Part(START_KEYS, base, to_date), Part(UNTIL_KEYS, base + "_until", to_date)), to_date
    if kind == "timerange":
        return (Part(START_KEYS, base, to_time), Part(UNTIL_KEYS, base + "_until", to_time), *tz), to_time
    if kind == "time":
        return (Part(("value",), base, to_time), *tz), to_time
    comps = tuple(Part((c,), base + "_" + normalize(c), None) for c in address_components(fd))
    return (Part(("formatted_address", "value"), base, None), *comps), None


_PARSE_TYPES: dict[Parser, str] = {to_float: "double", to_date: "date", to_time: "time", to_int: "bigint"}


def compile_field(
    fd: FieldDef, base: str, keep_ids: bool, unknown: Unknown = None, extra_column: ExtraColumn = None
) -> Compiled:
    """The converter and the column types of one custom field bound to `base`. `unknown` gives the label
    column's value for an option id the field does not list (default None); `extra_column` names the
    column of a member a composite value has beyond its type's (default `<base>_<member>`)."""
    kind = kind_of(fd.type)
    if kind in ("monetary", "daterange", "timerange", "time", "address"):
        parts, parse_scalar = _composite_parts(kind, base, fd)
        columns = {p.column: _PARSE_TYPES.get(p.parse, "text") for p in parts if p.declared}
        members = {k: p.column for p in parts for k in p.keys}
        conv = composite_converter(base, parts, parse_scalar, extra_column)
        return Compiled(conv, columns, True, members)
    if kind == "enum":
        id_col = base + "_id" if keep_ids else None
        columns = {base: "text", **({id_col: "bigint"} if id_col else {})}
        labels = option_labels(fd)
        return Compiled(enum_converter(base, id_col, labels, unknown), columns, False, labels=labels)
    if kind == "set":
        ids_col = base + "_ids" if keep_ids else None
        columns = {base: None, **({ids_col: None} if ids_col else {})}
        labels = option_labels(fd)
        items = {ids_col: "bigint"} if ids_col else {}
        return Compiled(
            set_converter(base, ids_col, labels, unknown), columns, False, labels=labels, items=items
        )
    if kind == "refs":
        return Compiled(scalar_converter(base, to_refs), {base: None}, False)
    if kind == "json" and fd.type != "json":  # "json": a code the fields endpoint did not list (warned there)
        logger.warning(
            "custom field %r has type %r this connector does not know: kept as text (JSON unless a string) "
            "in column %r",
            fd.name,
            fd.type,
            base,
        )
    if kind == "json":
        return Compiled(scalar_converter(base, to_json_text), {base: "text"}, False)
    parse, data_type = SCALAR_KINDS[kind]
    return Compiled(scalar_converter(base, parse), {base: data_type}, False)
