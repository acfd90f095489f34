"""Pipedrive's two paging schemes as generators of pages.

v2: `limit` + opaque `cursor`, next one in `additional_data.next_cursor` (null on the last page).
v1: `start` + `limit`, continuation in `additional_data.pagination.more_items_in_collection` / `next_start`
(leads and the per-deal lists put `more_items_in_collection` directly in `additional_data`).
Both yield one `Page` per HTTP response, so callers can stop early (sorted reads) without fetching more.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .client import PipedriveClient
from .errors import ApiError

logger = logging.getLogger(__name__)
# judges a listing's first page (`PipedriveClient.get`'s `accept`): a later one may be empty, the first of
# some lists may not (a field list without a field)
Accept = Callable[[dict], str | None] | None
MAX_STEPS_BACK = 32  # per listing: a list that keeps shifting this often is read on, with a warning


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    number: int  # 1-based within one listing
    has_more: bool


def cursor_pages(
    client: PipedriveClient,
    path: str,
    params: Mapping[str, Any],
    *,
    cost: int,
    label: str,
    page_size: int,
    missing_ok: bool = False,
    accept: Accept = None,
) -> Iterator[Page]:
    query = dict(params, limit=page_size)
    number = 0
    guard = LoopGuard(path)
    while True:
        first = accept if number == 0 else None
        body = client.get(path, query, cost=cost, label=label, missing_ok=missing_ok, accept=first)
        number += 1
        cursor = (body.get("additional_data") or {}).get("next_cursor") or None
        items = _items(body, path)
        guard.follow(items, cursor)
        yield Page(items, number, bool(cursor))
        if not cursor:
            return
        query["cursor"] = cursor


def offset_pages(
    client: PipedriveClient,
    path: str,
    params: Mapping[str, Any],
    *,
    cost: int,
    label: str,
    page_size: int | None,
    missing_ok: bool = False,
    overlap: int = 0,
    accept: Accept = None,
) -> Iterator[Page]:
    """`overlap` re-reads that many records before each next page: offsets shift left when records are
    deleted while we page, and a record crossing the page boundary would otherwise be skipped (the
    duplicates this causes are merged away by primary key).

    With an overlap, each page must share a record with the pages before it (`Anchor`); when more records
    vanished ahead of the offset than the overlap covers, it does not, and the read steps back (one
    stride, then twice as far, ... down to the start) until a page shares one again, then goes on from
    there. A normal read makes no extra request; records created meanwhile land at the end of the list
    (v1 sorts by id, or by update time when asked), so they never shift a page."""
    query = dict(params, start=0)
    if page_size:
        query["limit"] = page_size
    anchor = Anchor(_sort_field(params)) if overlap > 0 else None
    number, back, steps = 0, 0, 0
    guard = LoopGuard(path)
    while True:
        first = accept if query["start"] == 0 else None
        body = client.get(path, query, cost=cost, label=label, missing_ok=missing_ok, accept=first)
        number += 1
        extra = body.get("additional_data") or {}
        pagination = extra.get("pagination") or extra  # leads and per-deal lists use a flat envelope
        more = bool(pagination.get("more_items_in_collection"))
        items = _items(body, path)
        start = query["start"]
        if not back:  # a step back reads again on purpose
            guard.follow(items)
        yield Page(items, number, more)
        if anchor is not None and start > 0 and not anchor.holds(items):
            if steps < MAX_STEPS_BACK:
                steps += 1
                back = back * 2 if back else max(1, (page_size or 100) - overlap)
                logger.info("%s: the list shifted while paging; stepping back %d records", label, back)
                guard.restart()  # the pages read again after the step may be the ones read before it
                query["start"] = max(0, start - back)
                continue
            logger.warning("%s: the list kept shifting while paging; records may be missed", label)
        back = 0
        if anchor is not None:
            anchor.keep(items)
        if not more or not items:
            return
        next_start = pagination.get("next_start")
        following = next_start if isinstance(next_start, int) else start + len(items)
        query["start"] = max(start + 1, following - overlap)


class Anchor:
    """The records of the last pages of an offset listing, to tell whether the next page still overlaps.

    A record is known by its id and the value of the field the list is sorted by (a record updated in a
    list sorted by update time moves, so it cannot anchor). `BACK` pages are remembered, so a step back
    that lands in an earlier page still finds its anchor."""

    BACK = 8

    def __init__(self, sort_field: str | None) -> None:
        self.field = sort_field or "update_time"
        self.recent: deque[set[Any]] = deque(maxlen=self.BACK)

    def mark(self, item: dict[str, Any]) -> Any:
        return (_hashable(item.get("id")), _hashable(item.get(self.field)))

    def holds(self, items: list[dict[str, Any]]) -> bool:
        """Whether `items` (the page after the remembered ones) shares a record with them."""
        if not self.recent:
            return True
        marks = {self.mark(item) for item in items}
        return any(not marks.isdisjoint(page) for page in self.recent)

    def keep(self, items: list[dict[str, Any]]) -> None:
        if items:
            self.recent.append({self.mark(item) for item in items})


def _sort_field(params: Mapping[str, Any]) -> str | None:
    """The first field of a v1 `sort` parameter (`"update_time DESC"` -> `update_time`)."""
    sort = params.get("sort")
    return sort.split(",")[0].split()[0] if isinstance(sort, str) and sort.strip() else None


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def single_page(
    client: PipedriveClient,
    path: str,
    params: Mapping[str, Any],
    *,
    cost: int,
    label: str,
    missing_ok: bool = False,
    accept: Accept = None,
) -> Iterator[Page]:
    """Endpoints that return everything at once (users, currencies, boards, ...)."""
    body = client.get(path, dict(params), cost=cost, label=label, missing_ok=missing_ok, accept=accept)
    yield Page(_items(body, path), 1, False)


class LoopGuard:
    """One listing's pages as they follow each other: a server that ignores the paging parameters (answers
    the same page, or hands out a cursor it gave before) would otherwise be paged forever, the run never
    ending and never loading. Only the previous page's ids and the cursors seen are kept (a few bytes per
    page), so a listing of a million records costs nothing noticeable."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._cursors: set[str] = set()
        self._previous: int | None = None

    def follow(self, items: list[dict[str, Any]], cursor: Any = None) -> None:
        """Check a page and the cursor it gives to the next one (None: no cursor paging)."""
        mark = page_mark(items)
        if mark is not None:
            if mark == self._previous:
                raise self._looping("the same page again")
            self._previous = mark
        if cursor is None:
            return
        if not isinstance(cursor, str):
            raise ApiError(
                f"Unexpected response shape from {self.path}: `next_cursor` is a {type(cursor).__name__}, "
                "not a string. Nothing from this run was committed."
            )
        if cursor in self._cursors:
            raise self._looping("a cursor it had given before")
        self._cursors.add(cursor)

    def restart(self) -> None:
        """The listing goes back to read pages again on purpose: the next page is not compared."""
        self._previous = None

    def _looping(self, what: str) -> ApiError:
        return looping(self.path, what)


def page_mark(items: list[dict[str, Any]]) -> int | None:
    """A page's record ids in order, hashed (None: no ids to tell pages apart by)."""
    if not any(item.get("id") is not None for item in items):
        return None
    return hash(tuple(_hashable(item.get("id")) for item in items))


def looping(path: str, what: str) -> ApiError:
    return ApiError(
        f"Pipedrive answered {path} with {what} (it ignores the paging parameters), so paging "
        "would never end; stopped. Nothing from this run was committed; run the sync again later."
    )


def _items(body: dict, path: str) -> list[dict[str, Any]]:
    data = body.get("data")
    if data is None:
        return []
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ApiError(f"Unexpected response shape from {path}: `data` is not a list of objects.")
    return data
