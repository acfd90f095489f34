"""In-memory tables with sorted keyset indexes and a rendered-bytes cache.

A `Table` keeps records (plain dicts, timestamps as epoch ints) by id. Every record belongs to one *view*
("live", "archived", "deleted", ...), decided by the table's `view_of` function; list endpoints read one
view. For each (view, sort field) pair that a request has needed, the table keeps a list of
`(sort_key, id)` sorted ascending. Indexes are built lazily on first use and maintained with bisect on
every change, so a keyset page costs O(log n + page) and a mutation O(indexes * n) memmove (cheap).

Rendered JSON bytes of each record are cached per *variant* (e.g. "v2", "v1") and dropped when the record
changes, so a 500-record page is mostly a join of cached bytes.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from typing import Any

RecordId = int | str
Record = dict[str, Any]
KeyFunc = Callable[[Record], Any]


def _none_last(value: Any) -> Any:
    # None cannot be compared with str/int; rank it below every real value in a stable way.
    return (0, 0) if value is None else (1, value)


def field_key(name: str) -> KeyFunc:
    """Sort key on one record field; None sorts first."""
    return lambda rec: _none_last(rec.get(name))


class Table:
    """One entity's records, their views, sorted indexes and render cache."""

    def __init__(self, name: str, view_of: Callable[[Record], str], keys: dict[str, KeyFunc] | None = None):
        self.name = name
        self.rows: dict[RecordId, Record] = {}
        self.view_of = view_of
        self.keys: dict[str, KeyFunc] = {"id": lambda rec: rec["id"]}
        self.keys.update(keys or {})
        self._indexes: dict[tuple[str, str], list[tuple[Any, RecordId]]] = {}
        self._groups: dict[str, dict[Any, set[RecordId]]] = {}
        self._cache: dict[str, dict[RecordId, bytes]] = {}
        self.max_id = 0

    # --- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def get(self, rid: RecordId) -> Record | None:
        return self.rows.get(rid)

    def key_of(self, field: str, rec: Record) -> Any:
        return self.keys.setdefault(field, field_key(field))(rec)

    def index(self, view: str, field: str) -> list[tuple[Any, RecordId]]:
        """Sorted (key, id) list of the records in `view`; built on first use, then maintained."""
        ix = self._indexes.get((view, field))
        if ix is None:
            kf = self.keys.setdefault(field, field_key(field))
            vf = self.view_of
            ix = sorted((kf(r), r["id"]) for r in self.rows.values() if vf(r) == view)
            self._indexes[(view, field)] = ix
        return ix

    def group(self, field: str) -> dict[Any, set[RecordId]]:
        """Ids by the value of `field` (e.g. deal_products by deal_id); built on first use."""
        g = self._groups.get(field)
        if g is None:
            g = {}
            for r in self.rows.values():
                g.setdefault(r.get(field), set()).add(r["id"])
            self._groups[field] = g
        return g

    def in_view(self, view: str) -> Iterator[Record]:
        return (r for r in self.rows.values() if self.view_of(r) == view)

    def count(self, view: str) -> int:
        return sum(1 for r in self.rows.values() if self.view_of(r) == view)

    # --- render cache ------------------------------------------------------------------------------
    def cached(self, variant: str, rid: RecordId) -> bytes | None:
        c = self._cache.get(variant)
        return None if c is None else c.get(rid)

    def remember(self, variant: str, rid: RecordId, data: bytes) -> None:
        self._cache.setdefault(variant, {})[rid] = data

    def clear_cache(self) -> None:
        self._cache.clear()

    # --- writing -------------------------------------------------------------------------------
    def load(self, records: list[Record]) -> None:
        """Bulk load at generation time (no index maintenance: indexes are built lazily later)."""
        for rec in records:
            self.rows[rec["id"]] = rec
            if isinstance(rec["id"], int) and rec["id"] > self.max_id:
                self.max_id = rec["id"]
        self._indexes.clear()
        self._groups.clear()
        self._cache.clear()

    def next_id(self) -> int:
        self.max_id += 1
        return self.max_id

    def insert(self, rec: Record) -> None:
        rid = rec["id"]
        if rid in self.rows:
            raise KeyError(f"{self.name}: duplicate id {rid!r}")
        if isinstance(rid, int) and rid > self.max_id:
            self.max_id = rid
        self.rows[rid] = rec
        self._index_add(rec)

    def update(self, rid: RecordId, changes: dict[str, Any]) -> Record:
        """Apply `changes` to a record, keeping indexes, groups and the cache consistent."""
        rec = self.rows[rid]
        self._index_remove(rec)
        rec.update(changes)
        self._index_add(rec)
        for c in self._cache.values():
            c.pop(rid, None)
        return rec

    def _index_add(self, rec: Record) -> None:
        view = self.view_of(rec)
        for (v, field), ix in self._indexes.items():
            if v == view:
                insort(ix, (self.keys[field](rec), rec["id"]))
        for field, g in self._groups.items():
            g.setdefault(rec.get(field), set()).add(rec["id"])

    def _index_remove(self, rec: Record) -> None:
        view = self.view_of(rec)
        for (v, field), ix in self._indexes.items():
            if v == view:
                entry = (self.keys[field](rec), rec["id"])
                i = bisect_left(ix, entry)
                if i < len(ix) and ix[i] == entry:
                    del ix[i]
        for field, g in self._groups.items():
            ids = g.get(rec.get(field))
            if ids is not None:
                ids.discard(rec["id"])
