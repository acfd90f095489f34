"""What one entity reads in one run, through the run's fetch pool, and where its incremental cursor stands.

`EntityRead` turns an entity's strategy into concurrent jobs (`concurrency.py`): time windows for
`updated_since` listings, pages at known offsets for v1 lists read in full, a sequential chain for a sorted
read that stops early, independent requests for deal-id batches and per-parent calls. Its `batches()`
yields pages as they arrive (None while none is ready) and it knows, should the run stop on the budget,
whether every job completed and where an incomplete `updated_since` read must continue.

`CursorState` is an entity's incremental position in its dlt resource state (committed by dlt with the
load, so a failed run leaves it as it was): the last loaded `update_time` (sent as `updated_since`, which
is inclusive) and a digest of each record loaded at exactly that time. A record that comes back unchanged
at that boundary is dropped, so a run without changes loads nothing, while one changed again within the
same second is loaded. Once a complete read started `SETTLED_AFTER_S` or more after the boundary second,
no record can still appear in that second: the cursor moves on to the run's start minus that margin, so
the next run does not read the boundary's records again (after a bulk update, thousands of them, every
run until something newer changed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .concurrency import Batch, Chain, Feed, OffsetPages, Request, TimeWindows
from .entities import CURSOR, DEAL_BATCH, NONE, OFFSET, UPDATED_SINCE, Entity, Listing
from .record_digests import digest, key_text
from .settings import DEAL_IDS_PER_REQUEST, OFFSET_OVERLAP_SHARE, SETTLED_AFTER_S
from .timefmt import parse, render

Row = dict[str, Any]
STATE_KEY = "cursor"
LEGACY_KEY = "incremental"  # dlt.sources.incremental's state, from runs of earlier versions


@dataclass(frozen=True)
class Tag:
    """Which listing (and parent, for per-parent reads) a batch came from."""

    index: int
    listing: Listing
    parent: Any = None


class EntityRead:
    """The jobs of one entity in one run, feeding one `Feed`."""

    def __init__(self, entity: Entity, feed: Feed, page_size: int) -> None:
        self.entity = entity
        self.feed = feed
        self.page_size = min(entity.page_size, page_size) if entity.page_size else None
        self.jobs: list[Any] = []
        self.started = False
        self.waiting = False  # jobs not started yet (`_start_each`)

    # ---- starting ------------------------------------------------------------------------------------------
    def incremental(self, since: str | None, until: datetime) -> EntityRead:
        """UPDATED_SINCE: time windows per listing; SORTED: newest first until older than `since`."""
        for index, listing in enumerate(self.entity.listings):
            tag = Tag(index, listing)
            if self.entity.strategy == UPDATED_SINCE:
                params = {**listing.params, "sort_by": "update_time", "sort_direction": "asc"}
                start = parse(since) if since else None
                job: Any = TimeWindows(
                    self.feed, self._request(listing, params), tag, start, until, self.page_size or 500
                )
            elif since is None:  # a first load: oldest first, so that a stopped run can resume
                params = _ascending(listing.params, self.entity)
                field = self.entity.cursor_field
                if self.entity.paging == OFFSET and self.page_size:
                    job = self._offset_pages(listing, params, tag, time_field=field)
                else:
                    job = self._chain(listing, params, tag, time_field=field)
            else:  # newest first, until older than the cursor
                job = self._chain(listing, listing.params, tag, keep_going=_newer_than(since, self.entity))
            self._start(job)
        return self

    def full(self, params: Mapping[str, Any] | None = None, parent: Any = None) -> EntityRead:
        """Every page of every listing (FULL), or of one parent's list (PER_PARENT, with `params`)."""
        for index, listing in enumerate(self.entity.listings):
            query = {**listing.params, **(params or {})}
            tag = Tag(index, listing, parent)
            if self.entity.paging == OFFSET and self.page_size:
                self._start(self._offset_pages(listing, query, tag))
            else:
                self._start(self._chain(listing, query, tag))
        return self

    def deal_batches(self, ids: Sequence[Any]) -> EntityRead:
        """DEAL_BATCH: one request (and its pages) per 100 parent ids."""

        def chains() -> Iterator[Chain]:
            for start in range(0, len(ids), DEAL_IDS_PER_REQUEST):
                chunk = tuple(ids[start : start + DEAL_IDS_PER_REQUEST])
                for index, listing in enumerate(self.entity.listings):
                    _, query = parents_query(self.entity, listing, chunk)
                    yield self._chain(listing, query, Tag(index, listing, chunk))

        return self._start_each(chains())

    def per_record(self, ids: Sequence[Any]) -> EntityRead:
        """PER_RECORD: one list per parent record, its id in the path (`{id}`) or in the query parameter
        `parent_param` (a parent deleted meanwhile answers 404: no rows)."""

        def chains() -> Iterator[Chain]:
            for parent in ids:
                for index, listing in enumerate(self.entity.listings):
                    path, params = parents_query(self.entity, listing, (parent,))
                    request = self._request(listing, params, path=path, missing_ok=True)
                    yield self._paged(request, Tag(index, listing, parent))

        return self._start_each(chains())

    # ---- reading -------------------------------------------------------------------------------------------
    def batches(self) -> Iterator[Batch | None]:
        if not self.started:
            return
        yield from self.feed.pages()

    @property
    def complete(self) -> bool:
        return not self.waiting and all(job.complete for job in self.jobs)

    def resume_from(self) -> str | None:
        """Where an incomplete read continues next run (entity time format); None: where it started.

        Time windows and first loads read oldest first: every record older than the earliest point an
        unfinished job reached is loaded. A sorted read that stops early (newest first) has no such point."""
        points = []
        for job in self.jobs:
            if job.complete:
                continue
            point = job.resume_from() if hasattr(job, "resume_from") else None
            if point is None:
                return None
            points.append(render(point, self.entity.time_format) if isinstance(point, datetime) else point)
        return min(points) if points else None

    @property
    def splits(self) -> int:
        return sum(getattr(job, "splits", 0) for job in self.jobs)

    # ---- jobs ----------------------------------------------------------------------------------------------
    def _start(self, job: Any) -> None:
        self.started = True
        self.jobs.append(job)
        job.start()

    def _start_each(self, jobs: Iterator[Any]) -> EntityRead:
        """Start `jobs` as the feed has room for them (`Feed.supply`), in order."""
        self.started = self.waiting = True

        def more() -> bool:
            job = next(jobs, None)
            if job is None:
                self.waiting = False
                return False
            self._start(job)
            return True

        self.feed.supply(more)
        return self

    def _request(
        self, listing: Listing, params: Mapping[str, Any], path: str | None = None, missing_ok: bool = False
    ) -> Request:
        cost = listing.cost or self.entity.cost
        return Request(path or listing.path, dict(params), cost, self.entity.name, missing_ok)

    def _chain(
        self,
        listing: Listing,
        params: Mapping[str, Any],
        tag: Tag,
        keep_going: Any = None,
        time_field: str | None = None,
    ) -> Chain:
        return self._paged(self._request(listing, params), tag, keep_going, time_field)

    def _paged(
        self, request: Request, tag: Tag, keep_going: Any = None, time_field: str | None = None
    ) -> Chain:
        paging = {CURSOR: "cursor", OFFSET: "offset", NONE: "single"}[self.entity.paging]
        overlap = self._overlap()
        return Chain(self.feed, request, paging, tag, self.page_size, overlap, keep_going, time_field)

    def _offset_pages(
        self, listing: Listing, params: Mapping[str, Any], tag: Tag, time_field: str | None = None
    ) -> OffsetPages:
        size = self.page_size or 500
        request = self._request(listing, params)
        return OffsetPages(self.feed, request, tag, size, self._overlap(), time_field=time_field)

    def _overlap(self) -> int:
        if self.entity.paging != OFFSET:
            return 0
        return max(1, int((self.page_size or 100) * OFFSET_OVERLAP_SHARE))


def _ascending(params: Mapping[str, Any], entity: Entity) -> dict[str, Any]:
    """The listing's parameters, sorted by update time oldest first (v2 and v1 spellings)."""
    if entity.api == "v1":
        return {**params, "sort": f"{entity.cursor_field} ASC"}
    return {**params, "sort_by": entity.cursor_field, "sort_direction": "asc"}


def _newer_than(since: str | None, entity: Entity) -> Any:
    """Sorted newest first: keep reading while the page did not reach records older than `since`."""
    if not since:
        return None
    field = entity.cursor_field

    def keep_going(items: list[Row]) -> bool:
        times = [row.get(field) for row in items if row.get(field)]
        return not (times and min(times) < since)

    return keep_going


def settled_before(server_now: datetime, time_format: str) -> str:
    """The time before which a read starting at `server_now` sees every record (entity time format).

    A record is stamped when it is written and readable once committed, moments later; a read that starts
    `SETTLED_AFTER_S` after a second ended finds every record of that second. Only a record committed more
    than that after its stamp would be missed (one within it is read next run, like one of the run's own
    second)."""
    return render(server_now - timedelta(seconds=SETTLED_AFTER_S), time_format)


def parents_query(entity: Entity, listing: Listing, parents: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """The path and query of `listing` for the children of `parents`: `deal_ids` (DEAL_BATCH, up to 100),
    else the one parent's id in the path (`{id}`) or in the query parameter `parent_param`."""
    if entity.strategy == DEAL_BATCH:
        return listing.path, {**listing.params, "deal_ids": ",".join(str(i) for i in parents)}
    (parent,) = parents
    path = listing.path.format(id=parent)
    param = entity.parent_param
    return path, {**listing.params, param: parent} if param else dict(listing.params)


def run_until(server_now: datetime) -> datetime:
    """`updated_until` of a run: exclusive and whole seconds, so the run's own second is included; records
    changed later in that second come back next run (their `update_time` is >= the new cursor)."""
    return server_now.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)


class CursorState:
    """See the module docstring. `admit` filters each page before shaping; `commit` writes the state."""

    def __init__(self, state: dict[str, Any], entity: Entity, initial: str | None) -> None:
        self.field = entity.cursor_field or "update_time"
        saved = state.get(STATE_KEY) or {}
        legacy = ((state.get(LEGACY_KEY) or {}).get(self.field) or {}).get("last_value")
        self.since: str | None = saved.get("last_value") or legacy or initial
        self.boundary: dict[str, str] = dict(saved.get("boundary") or {})
        self.top: str | None = None  # newest update_time loaded this run
        self.at_top: list[Row] = []  # the records loaded at `top` (keyed when the state is written)
        self.key = entity.primary_key

    def admit(self, rows: list[Row]) -> list[Row]:
        """The rows to load: none older than the cursor, nor unchanged at it; notes the newest loaded.

        Digests are taken of the records as loaded (after the record hooks), and only of those at the
        boundary: when checking them, and for the newest ones when the state is written."""
        field, since, boundary, top = self.field, self.since, self.boundary, self.top
        kept: list[Row] = []
        for row in rows:
            moment = row.get(field)
            if moment is None or not isinstance(moment, str):
                kept.append(row)
                continue
            if since is not None and moment < since:
                continue  # older than the cursor: a sorted read's last page reaches back past it
            at_boundary = since is not None and moment == since and boundary
            if at_boundary and boundary.get(key_text(row, self.key)) == digest(row):
                continue
            if top is None or moment > top:  # a full read ascends: nearly every record is the newest
                top = self.top = moment
                self.at_top = []
            if moment == top:
                self.at_top.append(row)
            kept.append(row)
        return kept

    def commit(
        self,
        state: dict[str, Any],
        complete: bool,
        resume_from: str | None,
        rewind: str | None = None,
        settled: str | None = None,
    ) -> None:
        """Write the new position: the newest record loaded when the read completed (or `settled`, the
        time before which the read saw every record, when that is later), where to continue when it
        stopped early, no later than `rewind` (children of parents loaded from there are missing)."""
        self._advance(state, complete, resume_from, settled)
        if rewind is not None:
            rewind_cursor(state, rewind)

    def _advance(
        self, state: dict[str, Any], complete: bool, resume_from: str | None, settled: str | None
    ) -> None:
        if complete:
            newest = max(self.top or "", self.since or "")
            if settled is not None and settled > newest:
                # every record before `settled` was there to be read: none can come back at the boundary
                state[STATE_KEY] = {"last_value": settled, "boundary": {}}
            elif self.top is None:
                return  # nothing new: the cursor stays
            else:
                at_top = {key_text(row, self.key): digest(row) for row in self.at_top}  # a key's last record
                boundary = {**self.boundary, **at_top} if self.top == self.since else at_top
                state[STATE_KEY] = {"last_value": newest, "boundary": boundary}
        elif resume_from is not None and (self.since is None or resume_from > self.since):
            state[STATE_KEY] = {"last_value": resume_from, "boundary": {}}  # re-read from there next run
        if STATE_KEY in state:
            state.pop(LEGACY_KEY, None)


def saved_cursor(state: dict[str, Any]) -> str | None:
    """An entity's saved cursor value (None before its first complete read, or in a legacy state)."""
    return (state.get(STATE_KEY) or {}).get("last_value")


def read_before(state: dict[str, Any]) -> bool:
    """Whether the entity has a cursor from an earlier complete read (this version's or a legacy one)."""
    return bool(saved_cursor(state) or state.get(LEGACY_KEY))


def forget_cursor(state: dict[str, Any]) -> None:
    """The entity's next read starts over: every record again."""
    state.pop(STATE_KEY, None)
    state.pop(LEGACY_KEY, None)


def rewind_cursor(state: dict[str, Any], value: str) -> None:
    """Move an entity's cursor back to `value` (never forward): the next run reads from there again.

    At the cursor's own value too: its boundary (records of that second already loaded, skipped when read
    again unchanged) goes, since a record there may be one whose children this run did not read."""
    saved = state.get(STATE_KEY)
    if saved is not None and saved.get("last_value") and saved["last_value"] >= value:
        state[STATE_KEY] = {"last_value": value, "boundary": {}}
