"""Pages of records -> Arrow tables for a root table and its child tables, the way dlt would normalize them.

Why: dlt's JSON path normalizes every row in Python twice over (extract writes JSON lines, normalize reads,
flattens, types and re-writes them) and manages about 15-20k rows/s here; Arrow tables built once per page
skip the normalize work. What comes out is what dlt's relational normalizer makes of the same records with
`max_table_nesting=1`:
- a nested object becomes `parent__child` columns one level deep (deeper objects and lists inside it are
  JSON), but one the entity hints as `json` (`Entity.columns`: deal flow's `item_data`) is one JSON column;
  a list becomes a child table `<table>__<list>` (a list of scalars gives a `value` column; objects inside
  list items are JSON);
- column names through the schema's naming convention; a column's type is the one the schema already has,
  else its hint (the resource's for the root table, which carries the spec's types, `column_types.py`, and
  the custom fields'; the spec's for a child table, declared with the child table), else dlt's own inference
  on its first non-null value (type detections such as ISO timestamps and preferred types included); hinted
  columns are always there, all-null columns without a type are left out, as dlt does. Whole numbers in a
  `double` column become doubles, also beyond int64.
- `_dlt_id` of a root row is a hash of (table, primary key), so a record keeps its id across loads; child rows
  carry `_dlt_parent_id` (= `_dlt_root_id`), `_dlt_list_idx` and `_dlt_id` = `<parent id>.<index>`
  (unique in the child table, stable across loads); every row carries `_dlt_load_id`.

Child tables are dlt tables of their own (dlt cannot take a nested table's data at extract), written with
merge on `_dlt_id` and merge key `_dlt_root_id`: loading a parent replaces all of its child rows. A parent
whose list became empty gets a placeholder row marked `_dlt_deleted` (a hard-delete column) that removes its
old child rows and is not inserted itself; placeholders are only needed when the child table may already
hold rows (`replace_children`, `output.Outputs.replaces`: not on a first sync, after a full refresh or for
a table new to the pipeline). So are the root placeholders of an entity replaced as a set per parent
(`source._placeholders`, below).

An entity whose rows are replaced as a set per parent record (`Entity.merge_key`, say a deal's participants
by `deal_id`) loses rows without naming them: a participant removed from a deal is just absent from the
deal's next set, so merge key `_dlt_root_id` would leave its child rows behind. Its child rows carry the
root row's merge-key value in `_root_<merge key>` (`_root_deal_id`), and that column is the child tables'
merge key instead: loading a deal's participants (or the placeholder of a deal left without any) replaces
the child rows of all of that deal's participants, as dlt's own normalizer does for nested tables.

A column whose values do not fit its type in some page (say a text in a number column, a fraction in a
`bigint` one) sends that page of that table through dlt's own JSON normalizer instead, as flat dicts with the
same ids, so dlt coerces what it can and makes its usual variant column for the rest; nothing is lost or
reinterpreted here. Two kinds of value go to a variant column first (see `_variants`): an object or a list
in a column of another type to `__v_json` (dlt would make a table of a list), and a number that is not finite
in a numeric column to `__v_text` as its text ("NaN", "Infinity", "1e999": dlt would coerce it to NaN or inf,
which makes every SUM over the column NaN or inf), and so does a whole number beyond 64 bits in a `bigint`
column (dlt's writers cannot hold it); a page holding a non-finite float goes this way too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dt_time
from typing import Any

import dlt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.data_types import coerce_value, py_type_to_sc_type
from dlt.common.schema import Schema, utils
from dlt.common.utils import digest128b

from . import column_types, json_body
from .field_values import number_apart

Row = dict[str, Any]
Item = tuple[str, int, Any]  # a list item: (parent row's id, position in the list, the item)


class _HintsKept(logging.Filter):
    """dlt warns, per resource and run, that an Arrow table's column differs from the resource's hint (JSON
    columns arrive as text, dlt's id columns as nullable) and that it keeps the hint: which is the point of
    the hints, so the warning says nothing a user can act on (dlt logs the details at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "when merging arrow schema with dlt schema" not in str(record.msg)


logging.getLogger("dlt").addFilter(_HintsKept())
ID_BYTES = 10  # dlt's DLT_ID_LENGTH_BYTES
DELETED = "_dlt_deleted"
ROOT_KEY = "_dlt_root_id"
DLT_ID, PARENT_ID, LIST_IDX, LOAD_ID = "_dlt_id", "_dlt_parent_id", "_dlt_list_idx", "_dlt_load_id"

ARROW_TYPES: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "double": pa.float64(),
    "text": pa.string(),
    "bool": pa.bool_(),
    "json": pa.string(),  # JSON text; the column hint keeps dlt's type `json`
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "time": pa.time64("us"),
}
# the Python types each dlt type takes here without conversion (anything else: dlt's JSON path decides)
FITS: dict[str, frozenset[type]] = {
    "bigint": frozenset({int}),
    "double": frozenset({float, int}),
    "text": frozenset({str}),
    "bool": frozenset({bool}),
    "timestamp": frozenset({str, datetime}),
    "date": frozenset({str, date}),
    "time": frozenset({str, dt_time}),
}
NONE_TYPE = type(None)
STRICT = frozenset({"text", "timestamp", "date", "bool"})  # see `_strict`


@dataclass
class Shaped:
    """One table's part of a page: an Arrow table (fast path) or flat dicts (dlt's JSON path)."""

    table: str
    data: pa.Table | list[Row]
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)  # hints for columns first seen now
    is_root: bool = True
    merge_key: str = ROOT_KEY  # a child table's: the column whose values replace rows as a set
    json: dict[str, dict[str, Any]] = field(default_factory=dict)  # flat dicts' JSON columns (see `item`)

    @property
    def rows(self) -> int:
        return self.data.num_rows if isinstance(self.data, pa.Table) else len(self.data)


class _Columns:
    """Values of one table's page, column by column, in the order dlt would meet them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: dict[str, list[Any]] = {}

    def column(self, name: str) -> list[Any]:
        column = self.values.get(name)
        if column is None:
            column = self.values[name] = [None] * self.size
        return column


class PageShaper:
    """Shapes every page of one root table during a run (one instance per resource and run)."""

    def __init__(
        self,
        table: str,
        primary_key: str,
        schema: Schema,
        hints: Callable[[], Mapping[str, Mapping[str, Any]]],
        load_id: str,
        replace_children: bool,
        set_key: str | None = None,
        whole: frozenset[str] = frozenset(),
    ) -> None:
        self.table = table
        self.primary_key = primary_key
        self.schema = schema
        self.hints = hints  # the resource's current column hints (custom fields add theirs per run)
        self.load_id = load_id
        self.replace_children = replace_children
        self.set_key = set_key  # the root's merge key, when its rows are replaced as a set per parent
        self.child_key = set_key_column(set_key, schema) if set_key else ROOT_KEY
        self.whole = whole  # keys of objects kept as one JSON column, as dlt keeps a column hinted `json`
        self._names: dict[str, str] = {}
        self._hint_names: dict[str, str] = {}
        self._types: dict[str, dict[str, str]] = {}  # table -> column -> dlt data type decided
        self._announced: dict[str, set[str]] = {}  # table -> columns whose hints were passed on
        self._child_hints = column_types.child_columns(table)
        self.children_seen: set[str] = set(self.existing_children())  # tables that may need placeholders

    # ---- public ----------------------------------------------------------------------------------------
    def existing_children(self) -> list[str]:
        prefix = f"{self.table}__"
        return [name for name in self.schema.tables if name.startswith(prefix)]

    def shape(self, rows: list[Row], deleted: Callable[[Row], bool] | None = None) -> list[Shaped]:
        """The page as tables: root first, then its child tables (placeholders included).

        `deleted` marks rows whose child rows must only be removed (a hard-deleted parent)."""
        ids = self._root_ids(rows)
        skip = {i for i, row in enumerate(rows) if deleted(row)} if deleted is not None else set()
        values, lists = self._flatten(rows, ids, skip)
        values[LOAD_ID] = [self.load_id] * len(rows)
        values[DLT_ID] = ids
        out = [self._table(self.table, values, len(rows), is_root=True)]
        self.children_seen.update(lists)
        owners = None
        if self.set_key:
            owners = dict(zip(ids, values.get(self._name(self.set_key)) or [None] * len(ids), strict=True))
        for name in sorted(self.children_seen):
            items = lists.get(name, [])
            if self.replace_children:
                with_rows = {parent for parent, _, _ in items}
                items = items + [(parent, -1, None) for parent in ids if parent not in with_rows]
            if items:
                cols = self._child_columns(name, items, owners)
                out.append(self._table(name, cols.values, cols.size, is_root=False))
        return out

    # ---- flattening --------------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            normalized = self.schema.naming.normalize_identifier(key) if key.strip() else "_empty"
            name = self._names[key] = normalized
        return name

    def _flatten(
        self, rows: list[Row], ids: list[str], skip: set[int]
    ) -> tuple[dict[str, list[Any]], dict[str, list[Item]]]:
        """Root columns by name, and the list items per child table: one pass, raw keys named once.

        The pass is the larger part of shaping, so it stores into a column and catches the miss for a new
        one (a subscript costs less than a `get` call). Row by row reads each record's memory in order:
        gathering a column at a time (`[row.get(key) for row in rows]`) measured slower."""
        size = len(rows)
        flat: dict[str, list[Any]] = {}  # raw key -> values
        nested: dict[str, dict[str, list[Any]]] = {}  # raw key -> inner raw key -> values
        order: list[tuple[str, str | None]] = []  # first appearance, as dlt meets the columns
        lists: dict[str, list[Item]] = {}
        whole = self.whole
        for index, row in enumerate(rows):
            for key, value in row.items():
                kind = type(value)
                if kind is dict and key not in whole:
                    members = nested.get(key)
                    if members is None:
                        members = nested[key] = {}
                    _spread(members, key, value, index, size, order)
                elif kind is list:
                    if value and index not in skip:
                        found = lists.get(key)
                        if found is None:
                            found = lists[key] = []
                        parent = ids[index]
                        found.extend([(parent, i, item) for i, item in enumerate(value)])
                else:
                    try:
                        flat[key][index] = value
                    except KeyError:
                        flat[key] = _column(size, index, value)
                        order.append((key, None))
        values: dict[str, list[Any]] = {}
        for key, inner in order:
            name = self._name(key) if inner is None else f"{self._name(key)}__{self._name(inner)}"
            column = flat[key] if inner is None else nested[key][inner]
            if name in values:  # two raw keys with one normalized name: dlt keeps the later value
                column = [b if b is not None else a for a, b in zip(values[name], column, strict=True)]
            values[name] = column
        children = {f"{self.table}__{self._name(key)}": items for key, items in lists.items()}
        return values, children

    def _child_columns(self, table: str, items: list[Item], owners: dict[str, Any] | None) -> _Columns:
        """Child rows; index -1 is a placeholder that clears a parent's old rows (hard-deleted on load).
        `owners` maps a root row's id to its merge-key value (entities replaced as a set per parent)."""
        cols = self._item_values(items)
        parents = [parent for parent, _, _ in items]
        cols.values[ROOT_KEY] = parents
        cols.values[PARENT_ID] = parents
        if owners is not None:
            cols.values[self.child_key] = [owners[parent] for parent in parents]
        cols.values[LIST_IDX] = [position for _, position, _ in items]
        # unique within the child table and stable across loads: the parent's id and the position
        cols.values[DLT_ID] = [f"{parent}.{position}" for parent, position, _ in items]
        cols.values[LOAD_ID] = [self.load_id] * cols.size
        if any(position < 0 for _, position, _ in items):
            cols.values[DELETED] = [True if position < 0 else None for _, position, _ in items]
        return cols

    def _item_values(self, items: list[Item]) -> _Columns:
        """The list items' own columns: an object's members by name, any other item in `value`."""
        size = len(items)
        by_key: dict[str | None, list[Any]] = {}  # raw key (None: an item that is not an object) -> values
        for index, (_, position, item) in enumerate(items):
            if type(item) is dict:
                for key, value in item.items():
                    try:
                        by_key[key][index] = value
                    except KeyError:
                        by_key[key] = _column(size, index, value)
            elif position >= 0:
                try:
                    by_key[None][index] = item
                except KeyError:
                    by_key[None] = _column(size, index, item)
        cols = _Columns(size)
        named = [("value" if key is None else self._name(key), column) for key, column in by_key.items()]
        cols.values.update(named)
        if len(cols.values) < len(named):  # two keys with one name: an item's later key wins, as in dlt
            cols.values = self._item_values_by_name(items)
        return cols

    def _item_values_by_name(self, items: list[Item]) -> dict[str, list[Any]]:
        cols = _Columns(len(items))
        column, name_of = cols.column, self._name
        for index, (_, position, item) in enumerate(items):
            if type(item) is dict:
                for key, value in item.items():
                    column(name_of(key))[index] = value
            elif position >= 0:
                column("value")[index] = item
        return cols.values

    def _root_ids(self, rows: list[Row]) -> list[str]:
        """A hash of (table, primary key) per row: `digest128` of the same text, without re-encoding it."""
        prefix, key, dumps = f"{self.table}:".encode(), self.primary_key, orjson.dumps
        return [digest128b(prefix + dumps(row.get(key)), ID_BYTES) for row in rows]

    # ---- typing --------------------------------------------------------------------------------------------
    def _table(self, table: str, values: dict[str, list[Any]], size: int, is_root: bool) -> Shaped:
        types = self._types.get(table)
        if types is None:  # once per table and run: every later page only adds what it shows new
            types = self._types[table] = self._known_types(table)
        hints: dict[str, dict[str, Any]] = {}
        if not is_root and table not in self._announced:  # a child table's spec types go with its variant
            hints = {name: {"name": name, **hint} for name, hint in self._declared(table).items()}
        announced = self._announced.setdefault(table, set())
        arrays: dict[str, pa.Array] = {}
        fallback = False
        # hinted columns first, as dlt orders them when it normalizes records itself
        values = {**self._hinted_first(table, values, size), **values}
        for name, column in values.items():
            data_type = types.get(name) or self._infer(table, name, column)
            if data_type is None:
                continue  # only nulls so far: dlt creates the column once a value shows up
            types[name] = data_type
            if data_type == "json" and name not in announced:  # Arrow says string: say it is JSON
                hints[name] = {"name": name, "data_type": "json", "nullable": True}
            array = None if fallback else _array(column, data_type)
            if array is None:
                fallback = True
            else:
                arrays[name] = array
        if fallback:
            values = self._variants(values, types, announced, hints)
        if fallback and not is_root:
            hints.update(_link_hints(types, announced))
        announced.update(hints)
        key = ROOT_KEY if is_root else self.child_key
        if fallback:
            json = {n: {"name": n, "data_type": "json"} for n in values if types.get(n) == "json"}
            return Shaped(table, _rows(values, size, types), hints, is_root, key, json)
        return Shaped(table, pa.table(arrays), hints, is_root, key)

    def _variants(
        self,
        values: dict[str, list[Any]],
        types: dict[str, str],
        announced: set[str],
        hints: dict[str, dict[str, Any]],
    ) -> dict[str, list[Any]]:
        """Values dlt's normalizer would load wrongly, moved to the column's variant (named as dlt names one):
        - an object or a list in a column of another type (`title__nested` a number so far, a list now) to
          `<column>__v_json`. Left in place, dlt makes a table of its own of a list (`deals__title__nested`),
          which it then merges as a nested table keyed by `id`, and the load fails on every later run
          (`Cannot compare values of type VARCHAR and BIGINT`); an object it would spread into new columns.
        - a number that is not finite in a `double` or `bigint` column to `<column>__v_text`, as the text that
          came ("NaN", "-Infinity", "1e999"; a float as `nan`, `inf`). dlt coerces such a text to NaN or inf
          (`float()`), or a float to a `__v_double` variant, and one such value makes SUM() of the column
          NaN or inf in DuckDB and Postgres alike: the typed column gets NULL and the text is kept.
        - a whole number beyond 64 bits in a `bigint` column to `<column>__v_text` (digits as they came, a
          float as `1e+25`): dlt coerces the text or float to that integer, which its writers cannot hold,
          and the load failed in this run and every later one (the package stayed pending).
        - a value nested deeper than orjson writes (254 levels), in any column, to `<column>__v_text` as its
          JSON text: dlt writes a JSON column with orjson, and reads a text given to one as JSON again, so
          the normalize failed with `Recursion limit reached` (a set's option ids with such a value, say).
        - a number in a `date` or `timestamp` column (Pipedrive sends ISO text; a proxy or a bug may not) to
          `<column>__v_bigint` (`__v_double`, beyond 64 bits `__v_text`), as a custom date field's number
          goes (`field_values.number_apart`): dlt's coercion read it as seconds since 1970, a wrong date
          that looked real (20240101 as 1970-08-23)."""
        out: dict[str, list[Any]] = {}
        for name, column in values.items():
            out[name] = column
            data_type = types.get(name, "json")
            nested = any(type(v) in (dict, list) for v in column)
            if nested and any(map(_too_deep, column)):
                self._move(out, name, "text", _too_deep, json_body.dumps, types, announced, hints)
            if data_type == "json":
                continue
            if nested:
                self._move(out, name, "json", _nested, lambda v: v, types, announced, hints)
            misfit = AS_TEXT.get(data_type)
            if misfit is not None and any(map(misfit, column)):
                self._move(out, name, "text", misfit, _as_text, types, announced, hints)
            if data_type in DATED:
                for kind in {_variant_of(v) for v in column if type(v) in (int, float)}:
                    self._move(out, name, kind, _number_to(kind), _number_kept, types, announced, hints)
        return out

    def _move(
        self,
        out: dict[str, list[Any]],
        name: str,
        data_type: str,
        misfit: Callable[[Any], bool],
        convert: Callable[[Any], Any],
        types: dict[str, str],
        announced: set[str],
        hints: dict[str, dict[str, Any]],
    ) -> None:
        """The `misfit` values of column `name` into its variant of `data_type`, NULL in their column."""
        column = out[name]
        moved = [misfit(v) for v in column]  # once a value: a misfit may parse a text
        variant = self.schema.naming.shorten_fragments(name, f"v_{data_type}")
        out[name] = [None if m else v for v, m in zip(column, moved, strict=True)]
        values = [convert(v) if m else None for v, m in zip(column, moved, strict=True)]
        if variant in out:  # a value moved there before (a value too deep, then a number)
            values = [v if v is not None else before for v, before in zip(values, out[variant], strict=True)]
        out[variant] = values
        types[variant] = data_type
        if variant not in announced:
            hints[variant] = {"name": variant, "data_type": data_type, "nullable": True}

    def _declared(self, table: str) -> Mapping[str, Mapping[str, Any]]:
        """Column hints of `table`: the resource's (spec types, custom fields) for the root table, the
        spec's for a child table (`column_types.py`). Named as the schema names the page's columns: a
        custom field's hint carries its full name, which a destination with short identifiers (Postgres:
        63) shortens; left long, the hinted column and the data's column both became one name in dlt."""
        declared = self.hints() if table == self.table else self._child_hints.get(table, {})
        if not self.schema.naming.max_length:  # the hints' names are the schema's already (DuckDB): per page
            return declared
        name = self._hint_name
        return {name(column): hint for column, hint in declared.items()}

    def _hint_name(self, column: str) -> str:
        """A hinted column's name as dlt names the page's column: by path (`owner__id` stays two parts;
        `normalize_identifier` would make it `owner_id`, a second, empty column)."""
        name = self._hint_names.get(column)
        if name is None:
            name = self._hint_names[column] = self.schema.naming.normalize_path(column)
        return name

    def _hinted_first(self, table: str, values: dict[str, list[Any]], size: int) -> dict[str, list[Any]]:
        hinted = [name for name, hint in self._declared(table).items() if hint.get("data_type")]
        return {name: values.get(name) or [None] * size for name in hinted}

    def _known_types(self, table: str) -> dict[str, str]:
        known = {DLT_ID: "text", LOAD_ID: "text", ROOT_KEY: "text", PARENT_ID: "text", LIST_IDX: "bigint"}
        known[DELETED] = "bool"
        for name, hint in self._declared(table).items():
            if hint.get("data_type"):
                known[name] = hint["data_type"]
        if table in self.schema.tables:
            for name, column in self.schema.tables[table]["columns"].items():
                if column.get("data_type"):
                    known[name] = column["data_type"]
        return known

    def _infer(self, table: str, name: str, column: list[Any]) -> str | None:
        hint = self._declared(table).get(name)
        if hint and hint.get("data_type"):
            return hint["data_type"]
        value = next((v for v in column if v is not None), None)
        if value is None:
            return None
        if type(value) in (dict, list):
            return "json"
        detected = utils.autodetect_sc_type(self.schema._type_detections, type(value), value)
        return self.schema.get_preferred_type(name) or detected or py_type_to_sc_type(type(value))


CHILD_DISPOSITION = {"disposition": "merge", "strategy": "delete-insert"}
DELETED_COLUMN = {"name": DELETED, "data_type": "bool", "nullable": True, "hard_delete": True}
NESTED = ":nested_hints"  # marks, among the declared tables, that the resource's nested hints are gone


def declare_root(resource: Any, declared: set[str]) -> None:
    """The root table's hints for Arrow items, once per resource call (`prepare`): also before an item
    of no rows, which dlt computes the resource's tables for all the same."""
    if NESTED in declared:
        return
    declared.add(NESTED)
    if resource.nested_hints:
        resource.apply_hints(nested_hints={})
    # the source's hints were checked against the stored schema when it was built (`source._columns`);
    # the schema of the run decides: the source may have been built before its pipeline was active,
    # or a full refresh dropped the table since (then the spec's types apply again)
    columns = resource.columns if isinstance(resource.columns, dict) else {}
    live = dlt.current.source_schema().tables.get(resource.name, {}).get("columns", {})
    kept = column_types.keep_stored_types(resource.name, columns, live)
    if kept:
        resource.apply_hints(columns=kept)


def prepare(resource: Any, part: Shaped, declared: set[str]) -> None:
    """Give dlt the hints a shaped part needs before its data, from inside the running `resource`.

    A child table is a table variant of the resource, declared on first sight with its own keys and
    without the root table's column hints (a variant starts as a copy of the resource's hints). The
    resource's `nested_hints` (the child tables' types for records that dlt normalizes itself) are dropped
    first: dlt would declare the same tables again as nested tables of the root table."""
    declare_root(resource, declared)
    if part.is_root:
        if part.columns:
            resource.apply_hints(columns=part.columns)
        return
    if part.table not in declared:
        declared.add(part.table)
        resource.apply_hints(
            table_name=part.table,
            write_disposition=CHILD_DISPOSITION,
            primary_key=DLT_ID,
            merge_key=part.merge_key,
            columns={},  # empty: drop the copied root columns
            create_table_variant=True,
        )
        if part.merge_key != ROOT_KEY:  # nullable: a table that held rows before the column came gets it
            column = {"name": part.merge_key, "nullable": True}
            resource.apply_hints(
                table_name=part.table, columns={part.merge_key: column}, create_table_variant=True
            )
    if _has_placeholders(part) and f"{part.table}:{DELETED}" not in declared:
        declared.add(f"{part.table}:{DELETED}")  # the column exists once a parent's list was emptied
        resource.apply_hints(
            table_name=part.table, columns={DELETED: DELETED_COLUMN}, create_table_variant=True
        )
    if part.columns:
        resource.apply_hints(table_name=part.table, columns=part.columns, create_table_variant=True)


def _has_placeholders(part: Shaped) -> bool:
    if isinstance(part.data, pa.Table):
        return DELETED in part.data.column_names
    return any(DELETED in row for row in part.data)


def item(part: Shaped) -> Any:
    """The dlt item of a part: the root table's data as is, a child table's marked with its name.

    Flat dicts holding JSON values carry their JSON columns' hints: dlt computes a table's schema from the
    resource's hints at the table's first dict item of an extract and keeps it for the rest (Arrow items
    recompute it every time); only hints that come with an item make it compute again. A page that made a
    column JSON after an earlier page of flat dicts of its table (concurrent pages arrive in any order) had
    its lists made a nested table by dlt's normalizer, and every later load of the table failed."""
    if part.json:
        hints = dlt.mark.make_hints(table_name=None if part.is_root else part.table, columns=part.json)
        return dlt.mark.with_hints(part.data, hints, create_table_variant=not part.is_root)
    return part.data if part.is_root else dlt.mark.with_table_name(part.data, part.table)


def emit(resource: Any, parts: list[Shaped], declared: set[str]) -> Iterator[Any]:
    """dlt items for the shaped parts of a page (one item per table and page)."""
    for part in parts:
        prepare(resource, part, declared)
        yield item(part)


def concat(parts: list[Shaped]) -> Shaped:
    """Parts of one table as one: fewer, larger items cost dlt less per row (schema work is per item)."""
    first = parts[0]
    if len(parts) == 1:
        return first
    data = pa.concat_tables([p.data for p in parts], promote_options="default")
    return Shaped(first.table, data, {}, first.is_root, first.merge_key)


def _column(size: int, index: int, value: Any) -> list[Any]:
    """A new column of `size` nulls holding `value` at `index`."""
    column: list[Any] = [None] * size
    column[index] = value
    return column


def _spread(
    columns: dict[str, list[Any]],
    key: str,
    value: dict[str, Any],
    index: int,
    size: int,
    order: list[tuple[str, str | None]],
) -> None:
    """A nested object's members into their columns (`key__inner`), noting the columns new to the page."""
    for inner, inner_value in value.items():
        try:
            columns[inner][index] = inner_value
        except KeyError:
            columns[inner] = _column(size, index, inner_value)
            order.append((key, inner))


def set_key_column(merge_key: str, schema: Schema) -> str:
    """The child tables' column holding their root row's `merge_key` value (`_root_deal_id`)."""
    return schema.naming.normalize_identifier(f"_root_{merge_key}")


def _array(values: list[Any], data_type: str) -> pa.Array | None:
    """The Arrow array for a column of `data_type`, or None when some value does not fit it."""
    if data_type == "json":
        try:
            return pa.array([None if v is None else orjson.dumps(v).decode() for v in values], pa.string())
        except orjson.JSONEncodeError:  # a value nested past orjson's 254 levels: the page is written again
            return pa.array([None if v is None else json_body.dumps(v) for v in values], pa.string())
    if data_type in STRICT:
        array = _strict(values, data_type)
        if array is not None:
            return array
    return _checked(values, data_type)


def _strict(values: list[Any], data_type: str) -> pa.Array | None:
    """The array where Arrow's conversion itself takes just the values `FITS` allows, so that nobody needs
    to look at each value's type first (the larger part of the cost of a text column): a column Arrow
    infers as `string` holds only strings (and None), a `bool` conversion takes only bools. None: some
    value is something else, `_checked` decides."""
    if data_type in ("timestamp", "date") and type(_first(values)) is not str:
        return None  # objects (a custom date field's dates) or only nulls: for `_checked`
    try:
        array = pa.array(values, ARROW_TYPES[data_type] if data_type == "bool" else None)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None
    if array.type == pa.null():  # only None
        return pa.nulls(len(values), ARROW_TYPES[data_type])
    if data_type == "bool":
        return array
    if array.type != pa.string():
        return None
    try:
        return array if data_type == "text" else _cast(array, data_type)
    except pa.ArrowInvalid:  # not an ISO date or timestamp: dlt's JSON path decides
        return None


def _checked(values: list[Any], data_type: str) -> pa.Array | None:
    """The array once every value's type is known to fit `data_type`, else None."""
    fits = FITS.get(data_type)
    kinds = set(map(type, values)) - {NONE_TYPE}
    if fits is None or not kinds <= fits:
        return None
    if not kinds:  # no value (an unused custom field): no per-value conversion
        return pa.nulls(len(values), ARROW_TYPES[data_type])
    try:
        if kinds == {str} and data_type in ("timestamp", "date", "time"):
            return _parsed(values, data_type)
        if str in kinds and data_type != "text":
            return None  # strings mixed with objects: rare, dlt's JSON path coerces them
        if data_type == "double":
            return _finite(_doubles(values))
        return pa.array(values, ARROW_TYPES[data_type])
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, OverflowError):
        return None


def numbers_as_text(
    rows: list[Row], numeric: Mapping[str, str], items: Mapping[str, Mapping[str, str]] | None = None
) -> list[Row]:
    """Records that dlt's normalizer takes as they are (no Arrow pages: `arrow=False`, an entity with
    history): a number a column of `numeric` (top-level column -> `double` or `bigint`) cannot take as it
    is (`AS_TEXT`) becomes `{"v_text": <its text>}`, which dlt flattens into `<column>__v_text` (a number
    in a `date` or `timestamp` column of `numeric` goes to its number's variant: `number_apart`), the
    variant `_variants` fills on the Arrow path (a key named `value__v_text` would be normalized to
    `value_v_text`). So does a member of a list's items (`items`: list key -> its child table's numeric
    columns, `value` for a list of plain values), moved to the key `<member>__v_text`, which dlt keeps as
    that column name in a nested table (an object there would be JSON, `price__v_json`): a product's
    `prices` held NaN or an infinity in a DuckDB double (dlt's coercion of the text "NaN"), and 400 digits
    in a `bigint` member failed the normalize of every run. Changed in place, so the history sees what the
    table gets."""
    for row in rows:
        for key in numeric.keys() & row.keys():
            value, data_type = row[key], numeric[key]
            if data_type in DATED:
                if type(value) in (int, float):
                    row[key] = number_apart(value)
            elif AS_TEXT[data_type](value):
                row[key] = {"v_text": _as_text(value)}
        if items:
            for key in items.keys() & row.keys():
                listed = row[key]
                if type(listed) is list:
                    _item_numbers_as_text(listed, items[key])
    return rows


def too_deep_as_text(rows: list[Row]) -> list[Row]:
    """Records that dlt's normalizer takes as they are, with a value nested deeper than orjson writes (254
    levels; it reads 1024) as its JSON text where dlt would write it as JSON (a member of an object, an item
    of a list or its members), as on the Arrow path (`_array`). dlt writes the records with orjson at the
    extract: one such value failed the run with `Recursion limit reached`, and every later run while the
    record held it. One `orjson.dumps` of the page tells; the page is walked only when it fails."""
    try:
        orjson.dumps(rows, default=str)
    except orjson.JSONEncodeError:
        for row in rows:
            for key, value in row.items():
                if type(value) in (dict, list):
                    row[key] = _writable(value, as_json=False)
    return rows


def _writable(value: Any, as_json: bool) -> Any:
    """`value` as dlt's normalizer with `max_table_nesting=1` takes it, where it stands (`as_json`: a
    position dlt writes as JSON), with what orjson cannot write as its JSON text."""
    if not _too_deep(value):
        return value
    if as_json:
        return json_body.dumps(value)
    if type(value) is dict:  # an object's members: its columns, any object or list in them JSON
        return {key: _writable(member, as_json=True) for key, member in value.items()}
    # a list's items: rows of a child table, an item's own members its columns
    return [
        {key: _writable(member, as_json=True) for key, member in item.items()}
        if type(item) is dict
        else _writable(item, as_json=True)
        for item in value
    ]


def _item_numbers_as_text(listed: list[Any], numeric: Mapping[str, str]) -> None:
    plain = numeric.get("value")
    for index, item in enumerate(listed):
        if type(item) is dict:
            for member in numeric.keys() & item.keys():
                value = item[member]
                if AS_TEXT[numeric[member]](value):
                    del item[member]
                    item[f"{member}__v_text"] = _as_text(value)
        elif plain is not None and AS_TEXT[plain](item):
            listed[index] = {"value__v_text": _as_text(item)}


def _nested(value: Any) -> bool:
    return type(value) in (dict, list)


def _too_deep(value: Any) -> bool:
    """An object or a list nested deeper than orjson writes (254 levels; it reads 1024)."""
    if type(value) not in (dict, list):
        return False
    try:
        orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        return True
    return False


def _non_finite(value: Any) -> bool:
    """A float that is NaN or infinite, or a text or an integer `float()` reads as one (or cannot read:
    400 digits), as dlt's coercion does."""
    kind = type(value)
    if kind is str or kind is int:
        try:
            value = float(value)
        except ValueError:
            return False
        except OverflowError:
            return True
    elif kind is not float:
        return False
    return not math.isfinite(value)


def _beyond_bigint(value: Any) -> bool:
    """A value dlt's coercion to `bigint` turns into an integer beyond 64 bits (digits, hex digits, a whole
    float), or one that is not finite."""
    kind = type(value)
    if kind is not int:
        if kind is float and not math.isfinite(value):
            return True
        if kind not in (str, float):
            return False
        try:
            value = coerce_value("bigint", "text" if kind is str else "double", value)
        except ValueError:  # a fraction, a word: dlt's own variant column takes it
            return _non_finite(value)
    return not -(2**63) <= value < 2**63


# what a numeric column's value goes to `<column>__v_text` for (see `_variants`)
AS_TEXT: dict[str, Callable[[Any], bool]] = {"double": _non_finite, "bigint": _beyond_bigint}
DATED = frozenset({"date", "timestamp"})  # whose numbers go to a variant (`field_values.number_apart`)


def _variant_of(number: int | float) -> str:
    """The type of the variant `number_apart` puts a number in a date column into (`bigint`, ...)."""
    return next(iter(number_apart(number))).removeprefix("v_")


def _number_to(kind: str) -> Callable[[Any], bool]:
    return lambda value: type(value) in (int, float) and _variant_of(value) == kind


def _number_kept(number: int | float) -> Any:
    return next(iter(number_apart(number).values()))


def _as_text(value: Any) -> str:
    return value if type(value) is str else repr(value)


def _first(values: list[Any]) -> Any:
    return next((v for v in values if v is not None), None)


def _doubles(values: list[Any]) -> pa.Array:
    """A double column's numbers, whole ones too (`value` 100 next to 99.5); Arrow converts Python ints
    through int64, so a page holding an integer beyond it (1e20 written without a fraction) is converted
    here."""
    try:
        return pa.array(values, pa.float64())
    except (pa.ArrowInvalid, OverflowError):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())


def _finite(array: pa.Array) -> pa.Array | None:
    """The array, or None when it holds NaN or an infinity (a record hook's float): `_variants` moves it."""
    return None if pc.all(pc.is_finite(array)).as_py() is False else array


def _parsed(values: list[Any], data_type: str) -> pa.Array:
    """ISO strings as timestamps (UTC), dates or times."""
    if data_type == "time":
        return pa.array([None if v is None else dt_time.fromisoformat(v) for v in values], pa.time64("us"))
    return _cast(pa.array(values, pa.string()), data_type)


def _cast(strings: pa.Array, data_type: str) -> pa.Array:
    """ISO strings as dates or timestamps (UTC)."""
    if data_type == "date":
        return pc.cast(strings, pa.date32())
    try:
        return pc.cast(strings, ARROW_TYPES["timestamp"])
    except pa.ArrowInvalid:  # v1 writes "2025-01-01 10:20:00" (UTC) without a zone
        return pc.cast(pc.cast(strings, pa.timestamp("us")), ARROW_TYPES["timestamp"])


def _link_hints(types: Mapping[str, str], announced: set[str]) -> dict[str, dict[str, Any]]:
    """The link columns of a child table whose page goes to dlt's record path, typed as its Arrow pages type
    them. Left to dlt, a new `_dlt_parent_id` gets its nested-table hint `parent_key`, and this table has no
    parent table: dlt then warns in every run that the table is not linked to one."""
    return {
        name: {"name": name, "data_type": types[name], "nullable": True}
        for name in (PARENT_ID, LIST_IDX, LOAD_ID)
        if name not in announced
    }


def _rows(values: dict[str, list[Any]], size: int, types: Mapping[str, str]) -> list[Row]:
    """The page as flat dicts for dlt's JSON path (JSON columns keep their values: the hints type them)."""
    names = list(values)
    return [{name: values[name][i] for name in names if values[name][i] is not None} for i in range(size)]
