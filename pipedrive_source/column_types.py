"""Column types of every table, derived from Pipedrive's spec: the item schema of each entity's list endpoint
(`emulator/spec_v2.json` / `spec_v1.json`, generated from the official specs by `tools/derive_spec.py`).

Why: dlt infers a column's type from its first value, so a whole first `value` typed `deals.value` BIGINT and
every later fraction went to a variant column (and an integral value beyond int64 broke the load). Types from
the spec make a column's type the same whichever record comes first, on the Arrow and the records path.

OpenAPI type -> dlt type:
- integer -> bigint; number -> double (money: `value`, `price`, `amount`, `sum`, `tax` ... stay double even
  when whole). Number-typed identifiers (`id`, `*_id`) and `visible_to` (an enum of small integers) -> bigint:
  the v2 spec says `number` for the ids of products and variations only, where every other id is `integer`.
  Goals' `expected_outcome.target` (`integer` in the spec) -> double: revenue goals hold a sum of money.
- boolean -> bool.
- string -> timestamp for Pipedrive's timestamps (v2 RFC3339 `2025-01-01T10:20:00Z`, leads and call logs with
  `.000Z`, v1 `2025-01-01 10:20:00` UTC): `*_time`, `timestamp`, `created`, `modified`, `last_login`;
  date for `*_date`, `birthday` and goals' `duration` (`YYYY-MM-DD`); text otherwise. The derived spec
  keeps no `format` (and the v2 spec gives one for few of them), so the names decide;
  `tests/test_column_types.py` checks the choice against every value the emulator serves. Times of day
  (`due_time`, `next_activity_time`) and durations stay text, as written.
- any (the spec allows several JSON types) -> json: whatever arrives is kept; but a property named like a
  timestamp, date or time of day whose type the derived spec only knows from an example's null -> as named.
- object with declared properties -> `<name>__<property>` columns, one level deep (dlt flattens objects with
  `max_table_nesting=1`); objects and arrays inside them -> json.
- object with arbitrary keys (`custom_fields`, deal flow's `data`) -> no hints: custom fields are typed by
  `custom_fields.py`, flow values are text by the entity's own hints.
- array -> child table `<table>__<name>` (top-level lists; `max_table_nesting=1`): scalar items in a `value`
  column, object items in their properties' columns (anything deeper -> json).

`entities.Entity.columns` win over these (see `source._columns`); custom-field columns are hinted at run time
by the custom-field resolution, after these, under names that never hit a built-in column.

A column that already exists with another type (a dataset loaded before types came from the spec:
`deals.value` BIGINT) keeps its type (`keep_stored_types`): dlt would retype the column in its schema but
not in the destination, which would then cast every value to the old type (99.5 -> 100 in a BIGINT
column). A warning names the columns; a full refresh of the table (`refresh="drop_resources"`) retypes them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cache
from typing import Any

from dlt.common.configuration.container import Container
from dlt.common.normalizers.naming.snake_case import NamingConvention
from dlt.common.pipeline import PipelineContext

from .emulator import spec
from .entities import BY_NAME, Entity

Hints = dict[str, dict[str, Any]]
logger = logging.getLogger(__name__)
SCHEMA_NAME = "pipedrive"  # the source's schema (`@dlt.source(name="pipedrive")`)

NAMING = NamingConvention()  # dlt's default naming: the names dlt gives the columns
SCALARS = {"integer": "bigint", "number": "double", "boolean": "bool"}
NUMBER_IDS = {"id", "visible_to"}  # plus every `*_id`
MONEY_INTEGERS = {"expected_outcome__target"}
TIMESTAMP_NAMES = {"timestamp", "created", "modified", "last_login"}
TIMES_OF_DAY = {"due_time", "next_activity_time"}
DATE_NAMES = {"birthday", "duration__start", "duration__end"}  # goals: a period of dates
# lists whose spec has no item schema: the shape they share with a documented list
SAME_SHAPE_AS = {"lead_fields": ("v1", "/v1/noteFields")}  # /v1/leadFields is not in the v1 spec
# items the spec describes in prose only: products' and variations' prices ("Array of objects, each
# containing: product_id (number), currency (string), price (number), cost (number), direct_cost
# (number | null), notes (string)")
PRICES = {
    "product_id": "bigint",
    "product_variation_id": "bigint",
    "currency": "text",
    "price": "double",
    "cost": "double",
    "direct_cost": "double",
    "notes": "text",
}
UNDECLARED_ITEMS = {("products", "prices"): PRICES, ("product_variations", "prices"): PRICES}
# lead fields' option ids are lead label UUIDs for `label_ids` and integers for the other fields
OVERRIDES = {"lead_fields__options": {"id": "text"}}


def root_columns(entity: Entity) -> Hints:
    """Column hints of the entity's own table, in spec order (objects flattened as dlt flattens them)."""
    return dict(_tables(entity.name)[entity.name])


def child_columns(table: str) -> dict[str, Hints]:
    """Column hints of the child tables of `table` (`deals__label_ids`, `persons__emails` ...)."""
    if table not in BY_NAME:
        return {}
    return {name: dict(cols) for name, cols in _tables(table).items() if name != table}


def nested_hints(entity: Entity) -> dict[str, dict[str, Any]]:
    """The child tables' hints as dlt's `nested_hints` ({list name: {"columns": ...}}), for records that dlt
    normalizes itself (the Arrow path declares its child tables on its own, see `arrow_pages.py`)."""
    prefix = f"{entity.name}__"
    return {
        name.removeprefix(prefix): {"columns": {c: {"name": c, **hint} for c, hint in columns.items()}}
        for name, columns in child_columns(entity.name).items()
    }


def table_columns(table: str) -> Hints:
    """Column hints of any table: an entity's own or one of its child tables (empty when unknown)."""
    root = table.split("__", 1)[0]
    if root not in BY_NAME:
        return {}
    return dict(_tables(root).get(table, {}))


def declared_type(table: str, column: str) -> str | None:
    """The dlt type `table`'s `column` is created with whatever the data: the entity's own hint, else the
    spec's (`is_deleted`, the engine's flag, bool). None for a column neither declares."""
    if column == "is_deleted":
        return "bool"
    entity = BY_NAME.get(table)
    for hints in (entity.columns if entity else {}, table_columns(table)):
        data_type = hints.get(column, {}).get("data_type")
        if data_type:
            return data_type
    return None


def keep_stored_types(
    table: str, hints: Mapping[str, Mapping[str, Any]], stored: Mapping[str, Any] | None = None
) -> Hints:
    """Of the spec's and the entity's hints among `hints`, those whose type differs from the one the column
    already has (`stored`: the table's columns in a schema, by default the active pipeline's), changed to
    that type; and, for a column the table does not have (any more: a full refresh dropped it), those an
    earlier call changed, back to the spec's type. Empty when nothing changes. Custom-field hints are left
    to the custom-field resolution."""
    stored = _stored_columns(table) if stored is None else stored
    spec_types = _spec_types(table)
    kept: Hints = {}
    for name, hint in hints.items():
        if name not in spec_types:
            continue
        have = (stored.get(name) or {}).get("data_type") or spec_types[name]
        if have and hint.get("data_type") and hint["data_type"] != have:
            kept[name] = {**hint, "data_type": have}
    retyped = {name for name in kept if (stored.get(name) or {}).get("data_type")}
    if retyped:
        logger.warning(
            "%s: column(s) %s keep the type they have in the destination instead of the spec's (%s); a full "
            "refresh of the table retypes them",
            table,
            ", ".join(f"{name} {kept[name]['data_type']}" for name in sorted(retyped)),
            ", ".join(f"{name} {hints[name]['data_type']}" for name in sorted(retyped)),
        )
    return kept


def column_type(name: str, node: Mapping[str, Any]) -> str | None:
    """The dlt type of a scalar property `name` (already flattened: `value__amount`) of spec type `node`."""
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = set(kind) - {"null"}
        if kinds <= {"integer", "number"}:
            return "double" if "number" in kinds else "bigint"
        return "json"
    if kind == "any" and (_string_type(name) != "text" or name.rsplit("__", 1)[-1] in TIMES_OF_DAY):
        # known only from an example's null (a deal participant's `person`: the reference declares these
        # strings): a timestamp there loaded as a JSON string, the same one a timestamp column elsewhere
        return _string_type(name)
    if kind in ("any", "object", "array") or kind is None:
        return "json"
    if kind == "string":
        return _string_type(name)
    if kind == "number" and _is_identifier(name):
        return "bigint"
    if kind == "integer" and name in MONEY_INTEGERS:
        return "double"
    return SCALARS.get(kind)


# ---- derivation --------------------------------------------------------------------------------------------


def _string_type(name: str) -> str:
    leaf = name.rsplit("__", 1)[-1]
    if leaf in TIMES_OF_DAY:
        return "text"
    if leaf.endswith("_time") or leaf in TIMESTAMP_NAMES:
        return "timestamp"
    if leaf.endswith("_date") or leaf in DATE_NAMES or name in DATE_NAMES:
        return "date"
    return "text"


def _is_identifier(name: str) -> bool:
    leaf = name.rsplit("__", 1)[-1]
    return leaf in NUMBER_IDS or leaf.endswith("_id")


@cache
def _tables(table: str) -> dict[str, Hints]:
    entity = BY_NAME[table]
    tables: dict[str, Hints] = {table: {}}
    for name, node in _item_properties(entity).items():
        _add_property(tables, table, _name(name), node)
    flags = {key: value for listing in entity.listings for key, value in listing.flags.items()}
    for key, value in flags.items():
        if isinstance(value, bool):
            tables[table].setdefault(_name(key), _hint("bool"))
    for name, overrides in OVERRIDES.items():
        if name in tables:
            tables[name].update({column: _hint(data_type) for column, data_type in overrides.items()})
    return tables


def _add_property(tables: dict[str, Hints], table: str, name: str, node: Mapping[str, Any]) -> None:
    kind = node.get("type")
    if kind == "object":
        for inner, inner_node in (node.get("properties") or {}).items():
            column = f"{name}__{_name(inner)}"
            tables[table][column] = _hint(column_type(column, inner_node))
        return  # arbitrary keys (custom fields, flow data): typed elsewhere or by dlt
    if kind == "array":
        child = f"{table}__{name}"
        columns = _item_columns(table, name, node.get("items") or {})
        if columns:
            tables[child] = columns
        return
    tables[table][name] = _hint(column_type(name, node))


def _item_columns(table: str, name: str, items: Mapping[str, Any]) -> Hints:
    undeclared = UNDECLARED_ITEMS.get((table, name))
    if undeclared:
        return {column: _hint(data_type) for column, data_type in undeclared.items()}
    if items.get("type") == "object":
        props = items.get("properties") or {}
        return {_name(key): _hint(column_type(_name(key), node)) for key, node in props.items()}
    if items.get("type") in (None, "any"):
        return {}  # nothing declared: dlt's inference
    return {"value": _hint(column_type(name, items))}


def _item_properties(entity: Entity) -> dict[str, Any]:
    """Union of the item properties of the entity's list endpoints (first listing first)."""
    merged: dict[str, Any] = {}
    for listing in entity.listings:
        api, path = SAME_SHAPE_AS.get(entity.name, (entity.api, listing.path))
        op = spec.operation(api, "GET", path)
        props = (op.item_properties if op else None) or {}
        if entity.items_key:
            props = ((props.get(entity.items_key) or {}).get("items") or {}).get("properties") or {}
        for key, node in props.items():
            merged.setdefault(key, node)
    return merged


def _spec_types(table: str) -> dict[str, str]:
    """The types `table`'s own hints give (spec, then the entity's), by column."""
    entity = BY_NAME.get(table)
    if entity is None:
        return {}
    hints = {**root_columns(entity), **entity.columns}
    return {name: hint["data_type"] for name, hint in hints.items() if hint.get("data_type")}


def _stored_columns(table: str) -> Mapping[str, Any]:
    context = Container()[PipelineContext]
    if not context.is_active():  # no pipeline: nothing stored (asking would create a default pipeline)
        return {}
    try:
        pipeline = context.pipeline()
        if SCHEMA_NAME not in pipeline.schema_names:
            return {}
        # the schema in memory when there is one: asking the storage reloads it (~30 ms, per table)
        live = getattr(pipeline.schemas, "live_schemas", {}).get(SCHEMA_NAME)
        schema = live if live is not None else pipeline.schemas[SCHEMA_NAME]
        return schema.tables.get(table, {}).get("columns", {})
    except Exception:  # a pipeline that cannot read its schemas: the load itself will say why
        return {}


def _name(key: str) -> str:
    return NAMING.normalize_identifier(key)


def _hint(data_type: str | None) -> dict[str, Any]:
    return {"data_type": data_type or "text", "nullable": True}
