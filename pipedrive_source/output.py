"""Shaped pages of one entity -> dlt items: Arrow tables inside a pipeline run, plain dict pages otherwise.

Inside `pipeline.run`/`extract` a page becomes Arrow tables for its root and child tables
(`arrow_pages.py`), which skips dlt's per-row JSON normalization. The tables of several pages are joined
before they go to dlt (up to `FLUSH_BYTES` per entity, `HELD_BYTES` for all entities of the run together:
past the run's limit the entity holding the most hands its tables on): dlt's own work is per item, not per
row, and the memory held stays flat however many entities read at once. Each item becomes a Parquet row
group, whose metadata stays in memory until the file closes: when the entity adding a page handed its own
tables on, a large sync wrote 24,401 column chunks (1,365 row groups), 14,975 (849) now. Plain
dict pages, normalized by dlt as before, are yielded when iterating a resource outside a pipeline
(`list(source.with_resources(...))`), when the source was built with `arrow=False`, and for a resource
that also feeds a transformer not of this connector (such as the SCD2 history of `history.py`, which
expects records), so that it sees what it always saw, and for an entity whose nested tables records made
before (history on once; dlt refuses to make them tables of their own).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Collection, Iterator
from typing import Any

import dlt
import pyarrow as pa
from dlt.extract.items import DataItemWithMeta, TableNameMeta

from . import column_types
from .arrow_pages import (
    AS_TEXT,
    DATED,
    PageShaper,
    Shaped,
    concat,
    declare_root,
    item,
    numbers_as_text,
    prepare,
    too_deep_as_text,
)
from .concurrency import drop_duckdb_code, release_memory
from .entities import BY_NAME, Entity
from .errors import ConfigError, HistoryNeedsRefresh
from .loaded import merges
from .spec_hints import cache_spec_hints

Row = dict[str, Any]
FLUSH_BYTES = 4 * 1024 * 1024  # Arrow data an entity holds back before handing it to dlt
HELD_BYTES = 8 * 1024 * 1024  # Arrow data all entities of a run hold back together
# malloc'd per column of a held table besides what its buffers count: its array, buffer and type objects and
# the buffers' padding (measured: 1.05 KB per column for tables of 3 rows and 6-24 columns)
PART_COLUMN_BYTES = 1024


class Outputs:
    """Per run: each entity's choice (Arrow or records) and page shaper, shared by its resource and its
    transformer calls, and whether the destination merges (asked once: dlt resolves its configuration
    every time, ~25 ms)."""

    def __init__(self, arrow: bool) -> None:
        self.arrow = arrow
        self._shapers: dict[str, PageShaper | None] = {}
        self._declared: dict[str, set[str]] = {}
        self._items: dict[str, dict[str, dict[str, str]]] = {}  # see `list_items`
        self._merges: bool | None = None
        self._replaces: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._replaces_lock = threading.Lock()  # `shaper` asks it while holding `_lock`
        self.held = 0  # bytes all outputs hold back now (changed by the extract thread only)
        self.open = 0  # outputs not flushed yet (likewise)
        self.holding: set[Output] = set()  # outputs holding back some (likewise)
        self.started = False  # whether a resource of the run asked for its output yet (likewise)

    def output(self, entity: Entity, hard_delete: bool) -> Output:
        if not self.started:  # the extraction starts: what ran before it is not needed until the load
            self.started = True
            drop_duckdb_code()
        self.open += 1
        return Output(self, entity, hard_delete)

    def list_items(self, entity: str, lists: dict[str, str]) -> None:
        """The dlt types of the items of `entity`'s lists besides the spec's, known at run time (a custom set
        field's option ids: bigint): the records path checks their numbers as the spec's (`page`). Merged
        with the spec's here, once per fields revision, not per page."""
        run = {key: {"value": data_type} for key, data_type in lists.items()}
        self._items[entity] = {**_numeric_items(entity), **run}

    def items(self, entity: str) -> dict[str, dict[str, str]]:
        """`entity`'s lists whose items have numeric columns: the spec's and the run's (`list_items`)."""
        return self._items.get(entity) or _numeric_items(entity)

    def duckdb_code_ran(self) -> None:
        """DuckDB's code ran again in the extraction (a query of the destination): out of memory again, or
        it stays through the extraction (a large one peaked 28 MB higher)."""
        if self.started:
            drop_duckdb_code()

    def merges(self) -> bool:
        """Whether the running pipeline's destination merges (filesystem without a table format appends, so
        rows that only clear a parent's old children would become rows)."""
        if self._merges is None:
            try:
                self._merges = merges(dlt.current.pipeline().destination)
            except Exception:  # no pipeline or destination (e.g. iterating the source directly)
                self._merges = False
        return self._merges

    def replaces(self, entity: Entity) -> bool:
        """Whether a parent's rows of `entity` (its child rows, or its own rows where they are replaced as a
        set per parent: `Entity.merge_key`) must clear rows that its table may hold already. Not where the
        table holds none yet (a first sync, a full refresh, a table new to the pipeline): a placeholder per
        parent without rows would clear nothing (at `small`, 4,972 of them on a first sync). Decided once,
        before the entity's first page: the table is in the schema as soon as that page is."""
        with self._replaces_lock:
            if entity.name not in self._replaces:
                self._replaces[entity.name] = self.merges() and _may_hold_rows(entity.name)
            return self._replaces[entity.name]

    def shaper(self, entity: Entity) -> PageShaper | None:
        with self._lock:
            if entity.name not in self._shapers:
                self._shapers[entity.name] = self._new_shaper(entity)
            return self._shapers[entity.name]

    def declared(self, entity: Entity) -> set[str]:
        return self._declared.setdefault(entity.name, set())

    def _new_shaper(self, entity: Entity) -> PageShaper | None:
        if not self.arrow:
            return None
        try:
            load_id = dlt.current.load_package_state()["load_id"]
            resource = dlt.current.resource()
            schema = dlt.current.source_schema()
        except Exception:  # not inside a pipeline's extract: plain records
            return None
        layout = child_layout(schema, entity.name)
        if _fed_to_foreign_transformer(resource):
            if layout == "arrow":
                raise history_needs_a_refresh(entity.name)
            return None
        if layout == "records":  # loaded with history once: its nested tables are dlt's nested tables
            return None
        cache_spec_hints()  # dlt validates a table schema per Arrow item: see `spec_hints.py`

        def hints() -> dict[str, Any]:
            return resource.columns if isinstance(resource.columns, dict) else {}

        return PageShaper(
            entity.name,
            entity.primary_key,
            schema,
            hints,
            load_id,
            replace_children=self.replaces(entity),
            set_key=entity.merge_key,
            whole=frozenset(k for k, hint in entity.columns.items() if hint.get("data_type") == "json"),
        )


class Output:
    """The dlt items of one resource call: `page(rows)` for every page, then `flush()` once."""

    def __init__(self, outputs: Outputs, entity: Entity, hard_delete: bool) -> None:
        self.outputs = outputs
        self.entity = entity
        self.hard_delete = hard_delete
        self._held: dict[str, list[Shaped]] = {}
        self._bytes = 0
        self._due = False  # hand on at the next page: the largest holder when the run held too much
        self._resource: Any = None

    def page(self, rows: list[Row]) -> Iterator[Any]:
        if not rows:
            return
        shaper = self.outputs.shaper(self.entity)
        if shaper is None:
            yield too_deep_as_text(
                numbers_as_text(rows, _numeric_columns(), self.outputs.items(self.entity.name))
            )
            return
        resource = self._resource = self._resource or dlt.current.resource()
        declared = self.outputs.declared(self.entity)
        deleted = _deleted if (self.hard_delete or self.entity.merge_key) else None
        for part in shaper.shape(rows, deleted):
            prepare(resource, part, declared)
            if isinstance(part.data, pa.Table):
                self._held.setdefault(part.table, []).append(part)
                # the buffers' size (`nbytes` walks every column to count only what slices reference, ~0.2
                # ms for a wide page: seconds per run; a page's own tables reference all of it) plus the
                # objects around them, which a page of a few rows is mostly made of: one output of product
                # variations (a request per product) held 2,475 such pages of 295 KB of buffers in all
                size = part.data.get_total_buffer_size() + PART_COLUMN_BYTES * part.data.num_columns
                self._bytes += size
                self.outputs.held += size
            else:
                yield item(part)  # records for dlt's JSON path: as they come
        if self._bytes:
            self.outputs.holding.add(self)
        if self._hands_on():
            yield from self._hand_on()
            release_memory()  # the pages just shaped are freed: their memory goes back now and then

    def parents_only(self, rows: list[Row], children: Collection[str]) -> DataItemWithMeta:
        """An item that only `children`'s transformers act on (see `ParentsOnly`): no rows, so no file
        (an Arrow table of none made an empty Parquet file of the table on the filesystem destination),
        but dlt computes the resource's tables for it all the same, in the layout of its other items."""
        if self.outputs.shaper(self.entity) is not None:
            resource = self._resource = self._resource or dlt.current.resource()
            declare_root(resource, self.outputs.declared(self.entity))
        return DataItemWithMeta(ParentsOnly(rows, children), [])

    def _hands_on(self) -> bool:
        """Whether this output hands on what it holds now. Past the run's limit the largest holder does (at
        its next page when that is another output's, or now past twice the limit): row groups stay large,
        and every row group's metadata stays in memory until its file closes (about 0.85 KB a column)."""
        if self._bytes >= FLUSH_BYTES or self._due:
            return True
        outputs = self.outputs
        if outputs.held < HELD_BYTES:
            return False
        largest = max(outputs.holding, key=lambda o: o._bytes)
        largest._due = True
        return largest is self or outputs.held >= 2 * HELD_BYTES

    def flush(self) -> Iterator[Any]:
        """Everything held back, one item per table; the end of this resource call."""
        yield from self._hand_on()
        self.outputs.open -= 1
        if self.outputs.open == 0:  # nothing else reading (the end of extraction, usually)
            release_memory(min_interval_s=0.2)

    def _hand_on(self) -> Iterator[Any]:
        held, self._held = self._held, {}
        self.outputs.held -= self._bytes
        self.outputs.holding.discard(self)
        self._bytes = 0
        self._due = False
        for parts in held.values():
            yield item(concat(parts))


def _numeric_columns() -> dict[str, str]:
    """The running resource's `double`, `bigint`, `date` and `timestamp` columns and their types, custom
    fields' included (hinted per run), for `numbers_as_text`; none outside a pipeline, where no destination
    loads them."""
    try:
        columns = dlt.current.resource().columns
    except Exception:
        return {}
    if not isinstance(columns, dict):
        return {}
    checked = AS_TEXT.keys() | DATED
    return {name: hint["data_type"] for name, hint in columns.items() if hint.get("data_type") in checked}


@functools.cache
def _numeric_items(entity: str) -> dict[str, dict[str, str]]:
    """The entity's lists whose items have `double` or `bigint` columns (its child tables' spec types), by
    the list's key: those columns and their types."""
    prefix, out = f"{entity}__", {}
    for table, columns in column_types.child_columns(entity).items():
        numeric = {name: hint["data_type"] for name, hint in columns.items() if hint["data_type"] in AS_TEXT}
        if numeric:
            out[table.removeprefix(prefix)] = numeric
    return out


def _deleted(row: Row) -> bool:
    return row.get("is_deleted") is True


def _may_hold_rows(table: str) -> bool:
    """Whether the running pipeline's schema has `table` with columns (loaded before, not dropped since)."""
    try:
        schema = dlt.current.source_schema()
    except Exception:  # no source schema to ask: clearing old rows is never wrong
        return True
    return bool(schema.tables.get(table, {}).get("columns"))


def history_needs_a_refresh(entity: str) -> ConfigError:
    """The refusal of a history started on `entity` whose lists loaded as tables of their own
    (`child_layout` "arrow"): dlt refuses to turn them into its nested tables."""
    return HistoryNeedsRefresh(entity)


def child_layout(schema: Any, entity: str) -> str | None:
    """How the entity's child tables were made: "arrow" (tables of their own, `arrow_pages.py`), "records"
    (dlt's nested tables, with a parent) or None (none yet). dlt refuses to turn one into the other."""
    for name, table in schema.tables.items():
        if name.startswith(f"{entity}__") and table.get("columns"):
            return "records" if table.get("parent") == entity else "arrow"
    return None


def _fed_to_foreign_transformer(resource: Any) -> bool:
    """Whether a transformer that is not one of this connector's entities reads this resource's items."""
    try:
        source = dlt.current.source()
    except Exception:
        return False
    for other in source.resources.values():
        parent = getattr(other._pipe, "parent", None)
        if parent is resource._pipe and other.name not in BY_NAME:
            return True
    return False


def parent_ids(items: Any, meta: Any, parent: str, key: str = "id") -> list[Any]:
    """Distinct parent ids in an item a transformer received, in order (none from a child table's part)."""
    if isinstance(meta, TableNameMeta) and meta.table_name != parent:
        return []
    if isinstance(items, pa.Table):
        values = items.column(key).to_pylist() if key in items.column_names else []
    else:
        values = [row.get(key) for row in (items if isinstance(items, list) else [items])]
    return [value for value in dict.fromkeys(values) if value is not None]


class ParentsOnly:
    """The meta of an item that hands parent records to the transformers of `children` and loads nothing
    itself (its data is an empty list): a reconcile's records unchanged since they were loaded, whose
    children Pipedrive changes without stamping them (product variations). Loading the parents only to
    hand them on loaded every product again (293 rows and 894 of their child tables at `small`)."""

    __slots__ = ("children", "rows")

    def __init__(self, rows: list[Row], children: Collection[str]) -> None:
        self.rows, self.children = rows, frozenset(children)
