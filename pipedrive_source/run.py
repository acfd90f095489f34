"""Per-run state shared by all resources: the client, the server clock, memoized lists, progress, hooks.

`SyncMonitor` is the public, optional window into a run (progress callbacks, per-entity pages/rows/seconds,
the client's request and token counts). `SyncContext` is internal: one per source instance.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dlt

from .client import ClientStats, PipedriveClient
from .concurrency import DEFAULT_WORKERS, Batch, Feed, FetchPool
from .entities import BY_NAME, CURSOR, NONE, OFFSET, Entity, Listing
from .errors import ApiError, ConfigError
from .fetching import EntityRead, Tag, rewind_cursor
from .output import Outputs
from .pagination import Page, cursor_pages, offset_pages, single_page
from .settings import OFFSET_OVERLAP_SHARE

Row = dict[str, Any]
RecordHook = Callable[[Entity, list[Row], "SyncContext"], list[Row]]
"""Called with every page of records between fetch and yield; returns the records to load.

The place for the custom-field resolution step (hash keys -> names): `pipedrive_source(record_hooks=[...])`.
It runs inside the resource's generator, so `dlt.current.resource_state()` is the entity's state; field
definitions come from `SyncContext.field_definitions(entity)` (fetched once per run, shared).
"""


@dataclass
class EntityProgress:
    pages: int = 0
    rows: int = 0  # records received from Pipedrive (loaded rows are fewer when unchanged ones are skipped)
    seconds: float = 0.0
    skipped: str | None = None  # why the entity was skipped (plan or permission), if it was


@dataclass
class SyncMonitor:
    """Pass one to `pipedrive_source(monitor=...)` to watch a run and read its figures afterwards."""

    on_progress: Callable[[str, EntityProgress], None] | None = None
    entities: dict[str, EntityProgress] = field(default_factory=dict)
    client_stats: ClientStats | None = None
    live_ids: dict[str, set[Any]] = field(default_factory=dict)  # complete id listings made by this run
    hard_delete: bool = False
    listing_records: dict[str, list[int]] = field(default_factory=dict)  # records read per listing
    stopped: str | None = None  # why the run stopped early (daily budget): loaded data is kept
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def listing(self, entity: Entity, index: int, rows: int) -> None:
        with self._lock:
            counts = self.listing_records.setdefault(entity.name, [0] * len(entity.listings))
            counts[index] += rows

    def page(self, entity: str, rows: int) -> None:
        with self._lock:
            progress = self.entities.setdefault(entity, EntityProgress())
            progress.pages += 1
            progress.rows += rows
        if self.on_progress:
            self.on_progress(entity, progress)

    def record_live_ids(self, table: str, ids: set[Any]) -> None:
        """Every id `table` has in Pipedrive right now (a complete listing), for `deletions.flag_vanished`."""
        with self._lock:
            self.live_ids[table] = ids

    def progress(self, entity: str) -> EntityProgress:
        with self._lock:
            return self.entities.setdefault(entity, EntityProgress())


class SyncContext:
    """Everything one source instance's resources share during a run."""

    def __init__(
        self,
        client: PipedriveClient,
        monitor: SyncMonitor,
        start_date: datetime | None,
        page_size: int,
        hooks: Sequence[RecordHook],
        company_domain: str | None,
        workers: int = DEFAULT_WORKERS,
        arrow: bool = True,
    ) -> None:
        self.client = client
        self.pool = FetchPool(client, workers)
        self.outputs = Outputs(arrow)
        self.monitor = monitor
        self.start_date = start_date
        self.page_size = page_size
        self.hooks = tuple(hooks)
        self.company_domain = company_domain
        self._lock = threading.RLock()
        self._run_started: datetime | None = None
        self._memo: dict[str, list[Row]] = {}
        self._memo_locks: dict[str, threading.Lock] = {}
        self.rewinds: dict[str, str] = {}  # entity -> its cursor may not pass this (see `rewind`)
        monitor.client_stats = client.stats

    # ---- the run clock ---------------------------------------------------------------------------------
    def run_started(self) -> datetime:
        """Server time at the start of the run: the `Date` header of the run's first response.

        The engine orders resources so that full reads of small lists go first and usually provide it;
        otherwise (or when `company_domain` is set, to check the credentials belong to that company) one
        `/v1/users/me` call does. A server without that endpoint still answers 404 with a Date header.
        """
        with self._lock:
            if self._run_started is None:
                if self.company_domain or self.client.server_now is None:
                    me = self.client.get("/v1/users/me", cost=2, label="users/me", missing_ok=True)
                    self._check_company(me.get("data") or {})
                now = self.client.server_now
                if now is None:
                    raise ApiError(
                        "Pipedrive's response had no Date header; cannot fix the run's time window."
                    )
                self._run_started = now
            return self._run_started

    def _check_company(self, me: Mapping[str, Any]) -> None:
        actual = me.get("company_domain")
        if self.company_domain and actual and actual != self.company_domain:
            raise ConfigError(
                f"The credentials belong to the Pipedrive company '{actual}', not '{self.company_domain}'. "
                "Use a token of the right company or fix company_domain (SOURCES__PIPEDRIVE__COMPANY_DOMAIN)."
            )

    # ---- reading ----------------------------------------------------------------------------------------
    def pages(
        self,
        entity: Entity,
        listing: Listing,
        params: Mapping[str, Any] | None = None,
        path_params: Mapping[str, Any] | None = None,
        *,
        raw: bool = False,
        missing_ok: bool = False,
    ) -> Iterator[Page]:
        """Pages of one listing, shaped by the listing flags and the record hooks (unless `raw`)."""
        path = listing.path.format(**path_params) if path_params else listing.path
        query = {**listing.params, **(params or {})}
        options = {"cost": listing.cost or entity.cost, "label": entity.name, "missing_ok": missing_ok}
        page_size = min(entity.page_size, self.page_size) if entity.page_size else None
        if entity.paging == CURSOR:
            pages = cursor_pages(self.client, path, query, page_size=page_size or self.page_size, **options)
        elif entity.paging == OFFSET:
            overlap = max(1, int((page_size or 100) * OFFSET_OVERLAP_SHARE))
            pages = offset_pages(self.client, path, query, page_size=page_size, overlap=overlap, **options)
        elif entity.paging == NONE:
            pages = single_page(self.client, path, query, **options)
        else:
            raise ValueError(f"unknown paging {entity.paging!r}")
        for page in pages:
            items = _unwrap(page.items, entity.items_key)
            self.monitor.page(entity.name, len(items))
            if not raw:
                items = self.shape(entity, listing, items)
            yield Page(items, page.number, page.has_more)

    def shape(self, entity: Entity, listing: Listing, rows: list[Row]) -> list[Row]:
        for row in rows:
            for column, value in listing.flags.items():
                row.setdefault(column, value)
        for hook in self.hooks:
            rows = hook(entity, rows, self)
        return rows

    def read(self, entity: Entity) -> EntityRead:
        """A fresh concurrent read of `entity` through the run's pool (see `fetching.py`)."""
        return EntityRead(entity, Feed(self.pool), self.page_size)

    def records(self, entity: Entity, batch: Batch, raw: bool = False) -> list[Row]:
        """A fetched batch as records: unwrapped, counted, shaped by the listing flags and hooks."""
        tag: Tag = batch.tag
        items = _unwrap(batch.items, entity.items_key)
        self.monitor.page(entity.name, len(items))
        self.monitor.listing(entity, tag.index, len(items))
        return items if raw or not items else self.shape(entity, tag.listing, items)

    def prefetch(self, entities: Sequence[Entity]) -> None:
        """Fetch small shared lists (field definitions...) in the pool now, before a page needs them."""
        for entity in entities:
            self.pool.submit(lambda entity=entity: self._quietly(entity))

    def _quietly(self, entity: Entity) -> None:
        with contextlib.suppress(Exception):  # whoever needs the list asks again and gets the error then
            self.full_rows(entity)

    def rewind(self, entity: Entity, value: str) -> None:
        """Children of `entity`'s records from `value` on were not all read (the run stopped): its cursor
        must not pass `value`, whether its state is written already or later in this run."""
        with self._lock:
            known = self.rewinds.get(entity.name)
            self.rewinds[entity.name] = value if known is None else min(known, value)
        rewind_cursor(dlt.current.resource_state(entity.name), self.rewinds[entity.name])

    def note_stop(self) -> None:
        """Record a budget stop (once) for the monitor: the run ends cleanly with what it loaded."""
        if self.pool.stopped is not None and self.monitor.stopped is None:
            self.monitor.stopped = self.pool.stopped.message

    def full_rows(self, entity: Entity, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Every row of a small list, fetched once per run and shared (boards feed phases, fields hooks)."""
        key = f"{entity.name}?{sorted((params or {}).items())}"
        with self._lock:
            lock = self._memo_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                rows: list[Row] = []
                for listing in entity.listings:
                    for page in self.pages(entity, listing, params):
                        rows.extend(page.items)
                self._memo[key] = rows
            return self._memo[key]

    def field_definitions(self, entity: Entity) -> list[Row]:
        """The field definitions of `entity` (its `fields_entity` table), fetched at most once per run."""
        if not entity.fields_entity:
            return []
        return self.full_rows(BY_NAME[entity.fields_entity])

    def timed(self, entity: Entity) -> _Timer:
        return _Timer(self.monitor.progress(entity.name))


class _Timer:
    def __init__(self, progress: EntityProgress) -> None:
        self.progress = progress

    def __enter__(self) -> _Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.seconds += time.perf_counter() - self.started


def _unwrap(items: list[Row], items_key: str | None) -> list[Row]:
    if not items_key:
        return items
    out: list[Row] = []
    for item in items:
        out.extend(item.get(items_key) or [])
    return out
