"""Shaped pages of one entity -> dlt items: Arrow tables inside a pipeline run, plain dict pages otherwise.

Inside `pipeline.run`/`extract` a page becomes Arrow tables for its root and child tables
(`arrow_pages.py`), which skips dlt's per-row JSON normalization. Plain dict pages, normalized by dlt as
before, are yielded when iterating a resource outside a pipeline (`list(source.with_resources(...))`),
when the source was built with `arrow=False`, and for a resource that also feeds a transformer not of this
connector (such as the SCD2 history of `history.py`, which expects records), so that it sees what it always
saw.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import dlt
import pyarrow as pa
from dlt.extract.items import TableNameMeta

from .arrow_pages import PageShaper, emit
from .entities import BY_NAME, Entity

Row = dict[str, Any]
_merges: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


class Output:
    """One per entity and run; `page(rows)` yields the dlt items for a page of shaped records."""

    def __init__(self, entity: Entity, arrow: bool, hard_delete: bool) -> None:
        self.entity = entity
        self.want_arrow = arrow
        self.hard_delete = hard_delete
        self._shaper: PageShaper | None = None
        self._resource: Any = None
        self._declared: set[str] = set()
        self._decided = False

    def page(self, rows: list[Row]) -> Iterator[Any]:
        if not rows:
            return
        if not self._decided:
            self._decide()
        if self._shaper is None:
            yield rows
            return
        deleted = _deleted if (self.hard_delete or self.entity.merge_key) else None
        yield from emit(self._resource, self._shaper.shape(rows, deleted), self._declared)

    def _decide(self) -> None:
        self._decided = True
        if not self.want_arrow:
            return
        try:
            load_id = dlt.current.load_package_state()["load_id"]
            resource = dlt.current.resource()
            schema = dlt.current.source_schema()
        except Exception:  # not inside a pipeline's extract: plain records
            return
        if _fed_to_foreign_transformer(resource):
            return
        existed = bool(schema.tables.get(self.entity.name, {}).get("columns"))
        self._resource = resource
        self._shaper = PageShaper(
            self.entity.name,
            self.entity.primary_key,
            schema,
            lambda: resource.columns if isinstance(resource.columns, dict) else {},
            load_id,
            replace_children=existed and destination_merges(),
        )


def _deleted(row: Row) -> bool:
    return row.get("is_deleted") is True


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


def destination_merges() -> bool:
    """Whether the running pipeline's destination merges (filesystem without a table format appends, so
    rows that only clear a parent's old children would become rows). Cached per pipeline: asking dlt
    resolves the destination's configuration every time (~50 ms)."""
    try:
        pipeline = dlt.current.pipeline()
    except Exception:
        return False
    if pipeline not in _merges:
        try:
            caps = pipeline.destination.capabilities()
        except Exception:  # no destination configured (e.g. iterating the source directly)
            return False
        _merges[pipeline] = "delete-insert" in (caps.supported_merge_strategies or ())
    return _merges[pipeline]
