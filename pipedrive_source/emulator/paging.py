"""Pagination: v2 opaque keyset cursors and v1 start/limit.

A v2 cursor is base64url (no padding) of `{"field", "fieldValue", "sortDirection", "id"}` — the same
structure as the cursor in Pipedrive's own examples — naming the last record of the page by its sort key
and id. The next page starts strictly after that position in the (sort key, id) order, so a record
updated while a client pages with `sort_by=update_time` moves behind the cursor and is served again later,
never skipped; equal timestamps are ordered by id and never split or repeated at page boundaries.
"""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .params import BadRequest
from .spec import Operation
from .store import Record, RecordId, Table

Entry = tuple[Any, RecordId]
DEFAULT_LIMIT = 100  # a list's `limit` default where the spec states none
UNSTATED_MAX = 500  # the most a list serves where the spec states no maximum (v2's stated one)


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def encode_cursor(field: str, direction: str, key: Any, rid: RecordId) -> str:
    raw = orjson.dumps({"field": field, "fieldValue": key, "sortDirection": direction, "id": rid})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, field: str, direction: str) -> Entry:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        d = orjson.loads(raw)
        pos = (_tuplify(d["fieldValue"]), d["id"])
        ok = d["field"] == field and d["sortDirection"] == direction
    except (binascii.Error, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise BadRequest("Validation failed: cursor: Invalid cursor", "ERR_INVALID_CURSOR")
    return pos


def page_limit(op: Operation, q: dict[str, Any]) -> int:
    """The page size of a list request, by what the spec says of the operation's `limit`.

    A stated maximum ("a maximum value of 500 is allowed" in v2; v1 files 100, call logs "The upper limit is
    50") is a bound, not a hint: above it is a 400, as v2's strict validation has it and as the emulator
    holds v1 to (params.py), so a client learns its page size is wrong instead of getting smaller pages
    than it counts on. The default is the stated one ("If not provided, 100 items will be returned"), else
    100, never above the maximum. Where the spec states no maximum (v1 notes, roles, leads, a deal's flow
    and participants) the emulator serves at most UNSTATED_MAX and reports that limit in the envelope:
    nothing documents more, and a client must page on `more_items_in_collection` anyway."""
    p = op.params.get("limit")
    maximum = p.maximum if p is not None else None
    default = p.default if p is not None and isinstance(p.default, int) else DEFAULT_LIMIT
    limit = q.get("limit", default if maximum is None else min(default, maximum))
    if limit < 1 or (maximum is not None and limit > maximum):
        raise BadRequest(f"Validation failed: limit: Number must be between 1 and {maximum or UNSTATED_MAX}")
    return min(limit, UNSTATED_MAX)


@dataclass
class Ordered:
    """A sorted run of (key, id) entries, bounded to [lo, hi), to be read in one direction."""

    entries: Sequence[Entry]
    lo: int
    hi: int

    @classmethod
    def whole(cls, entries: Sequence[Entry]) -> Ordered:
        return cls(entries, 0, len(entries))

    def walk(self, after: Entry | None, descending: bool) -> Iterator[Entry]:
        e = self.entries
        if not descending:
            i = self.lo if after is None else max(self.lo, bisect_right(e, after))
            while i < self.hi:
                yield e[i]
                i += 1
        else:
            i = self.hi - 1 if after is None else min(self.hi, bisect_left(e, after)) - 1
            while i >= self.lo:
                yield e[i]
                i -= 1


def time_bounded(table: Table, view: str, since: int | None, until: int | None) -> Ordered:
    """The update_time index of `view`, bounded to since <= update_time < until."""
    ix = table.index(view, "update_time")
    lo = 0 if since is None else bisect_left(ix, ((1, since),))
    hi = len(ix) if until is None else bisect_left(ix, ((1, until),))
    return Ordered(ix, lo, max(lo, hi))


def keyset_page(
    table: Table,
    ordered: Ordered,
    after: Entry | None,
    descending: bool,
    limit: int,
    keep: Callable[[Record], bool] | None,
) -> tuple[list[Record], Entry | None]:
    """Up to `limit` records after the cursor position and the position to continue from (None: end)."""
    rows = table.rows
    page: list[Record] = []
    last: Entry | None = None
    for entry in ordered.walk(after, descending):
        rec = rows[entry[1]]
        if keep is not None and not keep(rec):
            continue
        if len(page) == limit:
            return page, last
        page.append(rec)
        last = entry
    return page, None


def offset_page(items: Iterator[Record], start: int, limit: int) -> tuple[list[Record], bool]:
    """v1 start/limit over an ordered stream: the page and whether more items follow."""
    page: list[Record] = []
    for n, rec in enumerate(items):
        if n < start:
            continue
        if len(page) == limit:
            return page, True
        page.append(rec)
    return page, False
