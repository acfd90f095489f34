"""Per-run state shared by all resources: the client, the server clock, memoized lists, progress, hooks.

`SyncMonitor` is the public, optional window into a run (progress callbacks, per-entity pages/rows/seconds,
the client's request and token counts). `SyncContext` is internal: one per source instance.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dlt
from dlt.common.configuration.container import Container
from dlt.common.exceptions import PipelineStateNotAvailable, SourceSectionNotAvailable
from dlt.common.pipeline import pipeline_state

from .client import ClientStats, PipedriveClient
from .concurrency import DEFAULT_WORKERS, Batch, Feed, FetchPool
from .entities import BY_NAME, CURSOR, FIELDS_TABLES, NONE, OFFSET, Entity, Listing
from .errors import AccessDenied, ApiError, ConfigError, NothingReadable, PipedriveError, setting_place
from .fetching import EntityRead, Tag, rewind_cursor
from .field_defs import without_fields
from .limiter import BudgetExhausted
from .output import Outputs
from .pagination import Page, cursor_pages, offset_pages, single_page
from .record_digests import IdListing
from .settings import OFFSET_OVERLAP_SHARE, check_start_date
from .state_history import other_pipelines_source_state

SOURCE_SECTION = "pipedrive"  # where dlt keeps the source state (`@dlt.source(section=...)`)
COMPANY_KEY = "company"  # source state: {id, domain} of the Pipedrive company whose data the pipeline holds
DATASET_KEY = "dataset"  # source state: the dataset whose reading positions the state holds

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
    live_ids: dict[str, IdListing] = field(default_factory=dict)  # complete id listings made by this run
    hard_delete: bool = False
    listing_records: dict[str, list[int]] = field(default_factory=dict)  # records read per listing
    stopped: str | None = None  # why the run stopped early (daily budget): loaded data is kept
    selected: frozenset[str] = frozenset()  # the entities the run was built for (set by the source)
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

    def record_live_ids(self, table: str, ids: Iterable[Any]) -> None:
        """Every id `table` has in Pipedrive right now (a complete listing), for `deletions.flag_vanished`."""
        listing = IdListing(ids)
        with self._lock:
            self.live_ids[table] = listing

    def progress(self, entity: str) -> EntityProgress:
        with self._lock:
            return self.entities.setdefault(entity, EntityProgress())

    def refused_everything(self) -> str | None:
        """Why the run read nothing when Pipedrive refused (HTTP 402/403) every selected table it asked
        for, else None. Such a run loads nothing and must not pass for a good one (exit 2 in the script, a
        failed run in Dagster); the skip lines name each table's cause and remedy."""
        with self._lock:
            tried = {n: p for n, p in self.entities.items() if n in self.selected}
        refused = sorted(name for name, progress in tried.items() if progress.skipped)
        if not refused or len(refused) < len(tried):
            return None
        return (
            f"Pipedrive refused every table this run asked for ({', '.join(refused)}): nothing was read. "
            "Its plan lacks them (HTTP 402, or the subscription has lapsed) or the user of these credentials "
            "may not read them (HTTP 403); the skip warning of each says which and what to do."
        )


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
        section: str | None = None,
    ) -> None:
        self.client = client
        # the named company whose own settings the run reads first (`errors.setting_place`), for a refusal
        # at run time; known as the source is built: a fetch thread (`prefetch`) sees no active pipeline
        self.section = section
        self.pool = FetchPool(client, workers)
        self.outputs = Outputs(arrow)
        self.monitor = monitor
        self.start_date = start_date
        self.page_size = page_size
        self.hooks = tuple(hooks)
        self.company_domain = company_domain
        self._lock = threading.RLock()
        self._run_started: datetime | None = None
        self._me: dict[str, Any] | None = None
        self._me_refused: PipedriveError | None = None  # how `identity` failed: the same for the whole run
        self._company_checked = False
        self._prefetch: list[Entity] = []  # lists to fetch once the pipeline is checked (`prefetch`)
        self._memo: dict[str, list[Row]] = {}
        # lists Pipedrive refused (402/403) or that failed after every retry: asked once a run, as another
        # ask within the run would get the same answer after paying every retry again
        self._failed: dict[str, PipedriveError] = {}
        self._memo_locks: dict[str, threading.Lock] = {}
        self.rewinds: dict[str, str] = {}  # entity -> its cursor may not pass this (see `rewind`)
        self.done: set[str] = set()  # entities whose resource has yielded its last item (see `read_done`)
        self._done_hooks: list[Callable[[str], None]] = []
        # parent entity -> {child: the parent's cursor after its last run with that child}, as this run began
        self.children_followed: dict[str, dict[str, str]] = {}
        monitor.client_stats = client.stats

    # ---- the run clock and the company -------------------------------------------------------------------
    def run_started(self) -> datetime:
        """Server time at the start of the run: the `Date` header of the run's first response (the
        `/v1/users/me` call of `identity` at the latest). A `start_date` after it is refused."""
        with self._lock:
            if self._run_started is None:
                self.check_pipeline()
                self.identity()  # once per run: also where no pipeline state lets `check_pipeline` ask
                now = self.client.server_now
                if now is None:
                    raise ApiError(
                        "Pipedrive's responses had no Date header in HTTP's GMT form (RFC 7231); cannot "
                        "fix the run's time window."
                    )
                # by the clock that stamps the records: the source checked the machine's clock only
                check_start_date(self.start_date, now, "Pipedrive's clock", lambda: self.section)
                self._run_started = now
            return self._run_started

    def identity(self) -> Mapping[str, Any]:
        """The credentials' user and company (`/v1/users/me`, cost 2), asked at most once per run; checked
        against `company_domain` when that is set. Empty when the server does not say (404, 403)."""
        with self._lock:
            if self._me_refused is not None:  # asked by the prefetch and each resource: one request
                raise self._me_refused
            if self._me is None:
                try:
                    self._me = self._ask_identity()
                except PipedriveError as exc:
                    self._me_refused = exc
                    raise
            return self._me

    def _ask_identity(self) -> dict[str, Any]:
        try:
            me = self.client.get("/v1/users/me", cost=2, label="users/me", missing_ok=True)
        except AccessDenied as exc:
            if exc.status == 402:  # every plan has it: the company may use nothing
                raise NothingReadable(_LAPSED.format(detail=exc.detail)) from None
            me = {}
        data = me.get("data") if isinstance(me.get("data"), dict) else {}
        self._check_domain(data)
        return data

    def check_pipeline(self) -> None:
        """Refuse a run into another dataset than the one whose reading positions the source state holds
        (`check_dataset`), before any request; then credentials of another company than the one whose data
        this pipeline holds.

        The dataset and the company loaded first are remembered in the source state (no secret). Called
        before anything is read or yielded; it acts only where the state is writable (the thread running
        the resources of a pipeline run, after dlt's refresh dropped what it drops), so that a refusal
        fails the extraction: nothing is loaded and the state stays as it was. The prefetch (`prefetch`)
        waits for it."""
        if self._company_checked:
            return
        state = _writable_source_state()
        if state is None:
            self._send_prefetch()
            return
        with self._lock:
            if self._company_checked:
                return
            pipeline = dlt.current.pipeline()
            check_dataset(state, pipeline.dataset_name, pipeline.pipeline_name)
            state[DATASET_KEY] = pipeline.dataset_name
            self._send_prefetch()
            company = _company(self.identity())
            known = state.get(COMPANY_KEY)
            if company is not None:
                if isinstance(known, Mapping) and known.get("id") != company["id"]:
                    raise ConfigError(_other_company_message(known, company))
                if known is None:  # a new pipeline: its dataset may hold another pipeline's company
                    _refuse_other_company_in_dataset(company)
                    self.outputs.duckdb_code_ran()
                state[COMPANY_KEY] = company  # first run (or the domain was renamed)
            self._company_checked = True

    def _check_domain(self, me: Mapping[str, Any]) -> None:
        actual = me.get("company_domain")
        if self.company_domain and actual and actual != self.company_domain:
            raise ConfigError(
                f"The credentials belong to the Pipedrive company '{actual}', not '{self.company_domain}'. "
                f"Use a token of the right company or fix company_domain "
                f"({setting_place('company_domain', self.section)})."
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
        options = {
            "cost": listing.cost or entity.cost,
            "label": entity.name,
            "missing_ok": missing_ok,
            "accept": without_fields if entity.name in FIELDS_TABLES else None,
        }
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
        self.check_pipeline()
        return EntityRead(entity, Feed(self.pool), self.page_size)

    def records(self, entity: Entity, batch: Batch, raw: bool = False) -> list[Row]:
        """A fetched batch as records: unwrapped, counted, shaped by the listing flags and hooks."""
        self.check_pipeline()
        tag: Tag = batch.tag
        items = _unwrap(batch.items, entity.items_key)
        self.monitor.page(entity.name, len(items))
        self.monitor.listing(entity, tag.index, len(items))
        return items if raw or not items else self.shape(entity, tag.listing, items)

    def prefetch(self, entities: Sequence[Entity]) -> None:
        """Fetch small shared lists (field definitions...) in the pool before a page needs them: as the
        run's first read asks (`check_pipeline`: a run refused before any request sends none of them);
        after the credentials' identity, which every read waits for anyway: credentials refused there (a
        lapsed subscription, a wrong token) send none of them."""
        with self._lock:
            self._prefetch.extend(entities)

    def _send_prefetch(self) -> None:
        with self._lock:
            entities, self._prefetch = self._prefetch, []
        for entity in entities:
            self.pool.submit(lambda entity=entity: self._quietly(entity))

    def _quietly(self, entity: Entity) -> None:
        # whoever needs the list gets the error then: the list's, remembered (`_full_rows`), or another
        with contextlib.suppress(Exception):
            self.identity()
            self._full_rows(entity)

    def rewind(self, entity: Entity, value: str) -> None:
        """Children of `entity`'s records from `value` on were not all read (the run stopped): its cursor
        must not pass `value`, whether its state is written already or later in this run."""
        with self._lock:
            known = self.rewinds.get(entity.name)
            self.rewinds[entity.name] = value if known is None else min(known, value)
        rewind_cursor(dlt.current.resource_state(entity.name), self.rewinds[entity.name])

    def read_done(self, entity: Entity) -> None:
        """`entity`'s resource is done (read, skipped or stopped): what waits for its records may go on."""
        with self._lock:
            self.done.add(entity.name)
        for hook in self._done_hooks:
            hook(entity.name)

    def when_done(self, hook: Callable[[str], None]) -> None:
        """Call `hook` with each entity's name as its resource is done (see `read_done`)."""
        self._done_hooks.append(hook)

    def note_stop(self) -> None:
        """Record a budget stop (once) for the monitor: the run ends cleanly with what it loaded."""
        if self.pool.stopped is not None and self.monitor.stopped is None:
            self.monitor.stopped = self.pool.stopped.message

    def until_budget_runs_out(self, items: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        """The items of a resource that is no entity's (the custom-field tables): when the budget runs
        out while it reads (field definitions no entity had asked for yet), the run stops cleanly as
        for entities, instead of failing with what the others read."""
        try:
            yield from items()
        except BudgetExhausted as exc:
            self.pool.stop(exc)
        self.note_stop()

    def full_rows(
        self, entity: Entity, params: Mapping[str, Any] | None = None, *, fresh: bool = False
    ) -> list[Row]:
        """Every row of a small list, fetched once per run and shared (boards feed phases, fields hooks);
        `fresh`: read again, leaving the shared rows as they are (what the run loads and compares), and not
        passed through the record hooks (they saw this list's rows once)."""
        self.check_pipeline()
        if not fresh:
            return self._full_rows(entity, params)
        failed = self._failed.get(_memo_key(entity, params))
        if failed is not None:  # no other answer within this run (`_full_rows`)
            raise failed
        return self._read_all(entity, params, raw=True)

    def _full_rows(self, entity: Entity, params: Mapping[str, Any] | None = None) -> list[Row]:
        key = _memo_key(entity, params)
        with self._lock:
            lock = self._memo_locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._failed:
                raise self._failed[key]
            if key not in self._memo:
                try:
                    self._memo[key] = self._read_all(entity, params)
                except PipedriveError as exc:  # a refusal, or a failure after every retry (`__init__`)
                    self._failed[key] = exc
                    raise
            return self._memo[key]

    def _read_all(self, entity: Entity, params: Mapping[str, Any] | None, raw: bool = False) -> list[Row]:
        return [
            item
            for listing in entity.listings
            for page in self.pages(entity, listing, params, raw=raw)
            for item in page.items
        ]

    def field_definitions(self, entity: Entity, *, fresh: bool = False) -> list[Row]:
        """The field definitions of `entity` (its `fields_entity` table), fetched once per run (`fresh`:
        read again)."""
        if not entity.fields_entity:
            return []
        return self.full_rows(BY_NAME[entity.fields_entity], fresh=fresh)

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


def _writable_source_state() -> dict[str, Any] | None:
    """The source state where a pipeline run persists what is written to it, else None (a fetch thread,
    a source built or iterated outside a pipeline run)."""
    try:
        state = dlt.current.source_state()
    except (SourceSectionNotAvailable, PipelineStateNotAvailable):
        return None
    return state if pipeline_state(Container())[1] else None


_LAPSED = (
    "Pipedrive refuses every request of these credentials: /v1/users/me, which every plan includes, "
    "answered HTTP 402 ({detail}), so the company's subscription has lapsed (or its trial ended). Nothing "
    "was read or loaded. Renew the subscription in Pipedrive and run again: the next run continues where "
    "the last one stopped."
)


def _company(me: Mapping[str, Any]) -> dict[str, Any] | None:
    if me.get("company_id") is None:
        return None
    return {"id": me["company_id"], "domain": me.get("company_domain")}


def _describe(company: Mapping[str, Any]) -> str:
    return f"'{company.get('domain')}' (id {company.get('id')})"


def _other_company_message(known: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    return (
        f"This pipeline holds data of the Pipedrive company {_describe(known)} but the credentials belong to "
        f"the company {_describe(actual)}; nothing was loaded. Use a token of {_describe(known)}, or load "
        "the other company with its own pipeline and dataset (--pipeline-name, --dataset), or start this "
        "pipeline over with --full-refresh of every table it holds (a run of some of them starts only those "
        "over and keeps the company)."
    )


class DatasetSwitch(ConfigError):
    """A run into another dataset than the one whose reading positions the pipeline's source state holds
    (`check_dataset`), with the ways out in the words of the library (`pipeline_name=`, `refresh=`);
    `for_flags` says it with the pipeline script's flags."""

    def __init__(self, pipeline: str, held: str, wanted: str) -> None:
        self.held, self.wanted = held, wanted
        self.own = pipeline + "_" + re.sub(r"\W+", "_", wanted.lower())  # a pipeline name of its own
        self.why = (
            f"The pipeline '{pipeline}' loads the dataset {held}, not {wanted}: its state (where each "
            f"table's reading got to) is {held}'s, so a run into {wanted} would read on from there and miss "
            "what changed since its own last run; nothing was read."
        )
        super().__init__(
            f"{self.why} Give {wanted} a pipeline of its own (dlt.pipeline(pipeline_name='{self.own}', "
            f"dataset_name='{wanted}')), or move this one with a refresh that drops the source's state "
            f"(refresh='drop_sources' in dlt.pipeline or pipeline.run: it loads {wanted} in full, and then "
            "belongs to it)."
        )

    def for_flags(self) -> ConfigError:
        return ConfigError(
            f"{self.why} Give {self.wanted} a pipeline of its own (--pipeline-name {self.own}), or move this "
            f"one with --full-refresh of every table it holds (it loads {self.wanted} in full, and then "
            "belongs to it)."
        )


def check_dataset(state: Mapping[str, Any], dataset: str, pipeline: str, held: str | None = None) -> None:
    """Refuse (`DatasetSwitch`) a run into `dataset` where the source state `state` holds the reading
    positions of another dataset (`DATASET_KEY`; `held` where it does not say, a state of an earlier
    version). dlt keeps one state per pipeline on the machine and takes a dataset's own back only when it
    is not older: after runs into `b`, a run back into `a` read on from `b`'s place, and the records
    changed in between reached neither dataset. A state without positions (every run stopped before
    reading, or a refresh dropped them) may load any dataset."""
    held = state.get(DATASET_KEY) or held
    positions = state.get("resources")
    if held and held != dataset and isinstance(positions, Mapping) and any(positions.values()):
        raise DatasetSwitch(pipeline, held, dataset)


def _refuse_other_company_in_dataset(company: Mapping[str, Any]) -> None:
    """A pipeline's first run into a dataset another pipeline filled with another company's data (a second
    `--pipeline-name` without its own `--dataset`) would merge that company's records over the first's
    wherever their ids meet."""
    pipeline = dlt.current.pipeline()
    for name, source in other_pipelines_source_state(pipeline, SOURCE_SECTION).items():
        other = source.get(COMPANY_KEY)
        if isinstance(other, Mapping) and other.get("id") != company["id"]:
            raise ConfigError(
                f"The dataset {pipeline.dataset_name} holds data of the Pipedrive company {_describe(other)} "
                f"(pipeline '{name}'), but these credentials belong to the company {_describe(company)}; "
                "nothing was loaded. Give this company a dataset of its own (--dataset), as pipelines/"
                "companies.py does."
            )


def _memo_key(entity: Entity, params: Mapping[str, Any] | None) -> str:
    return f"{entity.name}?{sorted((params or {}).items())}"


def _unwrap(items: list[Row], items_key: str | None) -> list[Row]:
    if not items_key:
        return items
    out: list[Row] = []
    for item in items:
        out.extend(item.get(items_key) or [])
    return out
