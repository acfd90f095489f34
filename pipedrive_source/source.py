"""The dlt source: a small generic engine that turns each entry of `entities.ENTITIES` into a dlt resource.

Every table is written with `merge` on its primary key. How a run finds what changed depends on the entity's
strategy (see `entities.py`); all strategies end in the same place: pages of records, shaped by the record
hooks (custom-field resolution plugs in there), yielded to dlt.

Requests run concurrently through one pool and one rate limiter per run (`concurrency.py`, `limiter.py`;
`fetching.py` says how each strategy is split), and every resource generator yields None while none of its
pages is ready, so that dlt serves the others meanwhile. Inside a pipeline run pages are loaded as Arrow
tables (`output.py`, `arrow_pages.py`).

Boundary rule for incremental cursors: `updated_since` is inclusive, so the records at the last loaded
`update_time` come back on the next run; the unchanged ones are dropped (`fetching.CursorState`), so a
no-change run loads nothing while a record changed again within the same second is still loaded. A
boundary more than a minute older than the run's start is settled, and the cursor moves past it.

When the daily token budget (or the run's share of it, `max_budget_share`) would run out, the run stops
cleanly: no new request, what was fetched is loaded, each entity's state points to where it must continue,
and `SyncMonitor.stopped` says when the budget resets (the pipeline script exits with code 3).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import dlt
import pyarrow as pa
from dlt.common.configuration.container import Container
from dlt.common.pipeline import PipelineContext
from dlt.common.typing import TSecretStrValue
from dlt.extract.resource import DltResource

from . import column_types
from .client import PipedriveClient
from .concurrency import DEFAULT_WORKERS
from .config_lookups import log_each_lookup_once
from .custom_fields_hook import (
    INHERITED_FIELDS,
    LEAD_LABELS,
    CustomFieldResolution,
    options_summary,
    relabelled_options,
)
from .deletions import materialized
from .entities import (
    BY_NAME,
    CURSOR,
    DEAL_BATCH,
    DEFAULT_ENTITIES,
    ENTITIES,
    FULL,
    OFFSET,
    PER_PARENT,
    PER_RECORD,
    SORTED,
    UPDATED_SINCE,
    Entity,
)
from .errors import (
    AccessDenied,
    ConfigError,
    PipedriveError,
    SettingError,
    env_setting,
    oauth_setting,
    setting_place,
    token_setting,
)
from .fetching import LEGACY_KEY as LEGACY_CURSOR_KEY
from .fetching import STATE_KEY as CURSOR_STATE_KEY
from .fetching import (
    CursorState,
    forget_cursor,
    parents_query,
    read_before,
    rewind_cursor,
    run_until,
    saved_cursor,
    settled_before,
)
from .history import keeps_history
from .limiter import BudgetExhausted, Plan, PlanLimiter, RateLimiter
from .oauth import ApiTokenAuth, Auth, OAuthAuth, PipedriveOAuthCredentials
from .output import Output, ParentsOnly, parent_ids
from .record_digests import DigestTable, digest, entry, set_entry
from .relinks import DestinationLinks, StoredLinks
from .run import RecordHook, Row, SyncContext, SyncMonitor
from .settings import (
    A_LIST,
    COMPANY_URL,
    CREDENTIAL_KEYS,
    DEFAULT_MAX_TABLE_NESTING,
    PAGE_SIZE,
    SOME_TABLES,
    Flag,
    HttpSettings,
    check_settings,
    check_start_date,
    flag,
)
from .timefmt import render, start_date_value

logger = logging.getLogger("pipedrive_source")
log_each_lookup_once()  # dlt logs every configuration lookup of a run: 200 more per file written


@dlt.source(name="pipedrive", section="pipedrive", max_table_nesting=DEFAULT_MAX_TABLE_NESTING)
def pipedrive_source(
    api_token: TSecretStrValue | None = dlt.secrets.value,
    company_domain: str | None = dlt.config.value,
    base_url: str | None = None,
    entities: Sequence[str] | None = None,
    start_date: str | None = None,
    oauth: PipedriveOAuthCredentials | None = None,
    hard_delete: Flag = None,
    reconcile: Flag = None,
    page_size: int = PAGE_SIZE,
    max_attempts: int = HttpSettings.max_attempts,
    backoff_base_s: float = HttpSettings.backoff_base_s,
    monitor: SyncMonitor | None = None,
    limiter: RateLimiter | None = None,
    record_hooks: Sequence[RecordHook] = (),
    resolve_custom_fields: Flag = None,
    keep_option_ids: Flag = None,
    full_read_interval_hours: float | None = None,
    burst_limit: int | None = None,
    daily_token_budget: int | None = None,
    max_budget_share: float = 1.0,
    workers: int = DEFAULT_WORKERS,
    arrow: Flag = None,
) -> list[DltResource]:
    """All Pipedrive entities of one company as dlt resources (one table each), merged on their primary key.

    Args:
        api_token: personal API token (`SOURCES__PIPEDRIVE__API_TOKEN`); not needed with `oauth`.
        company_domain: `<company_domain>.pipedrive.com`; also checked against the token's company.
        base_url: overrides the company URL (e.g. the emulator's `http://127.0.0.1:PORT`).
        entities: a list of the table names to load, not one string (default: all but the opt-in ones,
            `Entity.opt_in`: a request per parent record). A child of deals, persons, organizations or
            products pulls in its parent.
        start_date: first run loads records updated since then (default: the whole history).
        oauth: access/refresh token and client id/secret (`[sources.pipedrive.oauth]`).
        hard_delete: remove records Pipedrive reports deleted instead of keeping them with `is_deleted`
            (default false). This and the other `Flag`s take true or false only (`settings.flag`).
        reconcile: also list every id of the incrementally loaded entities (a full read), so that
            `deletions.flag_vanished` can flag records deleted in Pipedrive; of the records listed, only
            those a merge of persons or organizations moved unstamped are loaded (`relinks.py`); every
            product's variations are read (their changes leave the product unstamped), and loaded where
            a product's set changed (`_ChildSets`). Default false.
        page_size: records per page (Pipedrive allows up to 500).
        monitor: receives progress and the run's figures (requests, tokens, rows per entity).
        limiter: the run's rate limiter (see `limiter.py`); default: a `PlanLimiter` built from
            `burst_limit`, `daily_token_budget` and `max_budget_share`.
        record_hooks: functions applied to every page of records before it is yielded (after the
            custom-field resolution).
        resolve_custom_fields: hash keys -> readable columns, option ids -> labels, plus the tables
            `custom_fields` and `custom_field_options` (see `custom_fields.py`); false loads raw values
            (default true).
        keep_option_ids: keep the raw option ids next to their labels (`<column>_id`, `<column>_ids`);
            default false.
        full_read_interval_hours: how often the lists that can be neither filtered nor sorted (call_logs,
            projects, tasks, phases) are re-read in full (default: each entity's own, 24 h; 0: every run). See
            `entities.py`; `reconcile` and a full refresh read them anyway.
        burst_limit: requests per 2 s the plan allows (API token 20/40/100/120, OAuth 80..480, so at most
            `HIGHEST_BURST_LIMIT`); default: learned from the `x-ratelimit-limit` header. A lower value leaves
            room to other integrations.
        daily_token_budget: the company's daily token budget; default: learned from the response headers.
        max_budget_share: share of the daily budget this run may spend (0-1]; the run stops cleanly there.
        workers: requests in flight at most (the rate limiter paces them), 1 to `RUN_BUFFERED_PAGES`.
        arrow: load pages as Arrow tables (fast; default true); false lets dlt normalize the records one
            by one.
    """
    hard_delete = flag("hard_delete", hard_delete, False, own_section)
    reconcile = flag("reconcile", reconcile, False, own_section)
    resolve_custom_fields = flag("resolve_custom_fields", resolve_custom_fields, True, own_section)
    keep_option_ids = flag("keep_option_ids", keep_option_ids, False, own_section)
    arrow = flag("arrow", arrow, True, own_section)
    selected = _select(entities)
    if arrow:
        _extract_writer_defaults()
    check_settings(
        own_section,
        page_size=page_size,
        max_attempts=max_attempts,
        workers=workers,
        backoff_base_s=backoff_base_s,
        full_read_interval_hours=full_read_interval_hours,
        burst_limit=burst_limit,
        daily_token_budget=daily_token_budget,
        max_budget_share=max_budget_share,
    )
    start = start_date_value(start_date, own_section)
    # the machine's clock: before any request (the run checks Pipedrive's again, `SyncContext.run_started`)
    check_start_date(start, datetime.now(UTC), "this machine's clock", own_section)
    http = HttpSettings(max_attempts=max_attempts, backoff_base_s=backoff_base_s)
    if limiter is None:
        limiter = PlanLimiter(Plan(burst_limit, daily_token_budget, max_budget_share))
    domain = _domain_name(company_domain)
    url, section = _base_url(base_url, domain), own_section()
    client = PipedriveClient(url, _auth(api_token, oauth, section), http, limiter, section=section)
    monitor = monitor or SyncMonitor()
    monitor.hard_delete = hard_delete
    monitor.selected = frozenset(selected)
    resolution = CustomFieldResolution(keep_option_ids=keep_option_ids) if resolve_custom_fields else None
    hooks = (resolution, *record_hooks) if resolution else tuple(record_hooks)  # resolution first
    ctx = SyncContext(
        client,
        monitor,
        start,
        page_size,
        hooks,
        domain,
        workers=workers,
        arrow=arrow,
        section=section,
    )
    built: dict[str, DltResource] = {}
    links = _reconcile_links(ctx, selected) if reconcile else None
    for entity in ENTITIES:
        if entity.name in selected:
            interval = _full_read_interval(entity, full_read_interval_hours)
            built[entity.name] = _resource(entity, ctx, built, hard_delete, links, interval, selected)
    if resolution is not None:  # field definitions arrive while the first pages are on their way
        ctx.prefetch(_shared_lists(selected))  # sent as the run's first read asks
    # small full reads first: their responses fix the run's server time before incremental reads need it,
    # and field definitions are in hand before the records whose custom fields they describe
    # (lists with a full-read interval last among them: their check needs the server time)
    order = sorted(ENTITIES, key=_read_order)
    resources = [built[e.name] for e in order if e.name in built]
    if resolution is not None:
        resources += resolution.resources(ctx, [e for e in ENTITIES if e.name in built])
    return resources


# ---- configuration -----------------------------------------------------------------------------------------


# dlt's extract writers hold up to 5,000 rows of every table before writing them out. This source's Arrow
# items come batched already (`output.FLUSH_BYTES`), so that buffer only adds memory, and memory that grows
# with the company: at a large one every table fills it (25 MB more than at a small one, measured).
EXTRACT_BUFFER = "sources.pipedrive.data_writer.buffer_max_items"
# A Parquet writer keeps every row group's metadata until its file closes (about 0.4-0.85 KB per column
# chunk): memory that grew with the company, file by file (heaptrack at twice large: 20 MB of it when the
# extraction peaks, 6-7 MB at large). A new file every `EXTRACT_FILE_ROWS` rows of a table bounds it; a table
# in several files loads with one follow-up job more (a large sync's load: the same 5.5 s; bench/RESULTS.md,
# stop 26).
EXTRACT_FILE_ROWS_KEY = "sources.pipedrive.data_writer.file_max_items"
EXTRACT_FILE_ROWS = 100_000
_EXTRACT_DEFAULTS = {EXTRACT_BUFFER: 1, EXTRACT_FILE_ROWS_KEY: EXTRACT_FILE_ROWS}


def _extract_writer_defaults() -> None:
    """Unless configured otherwise (for this source or for every writer), dlt writes each item of this
    source as it comes and starts a new file every `EXTRACT_FILE_ROWS` rows (only this source's extraction:
    dlt's normalizer writes row by row and keeps its buffer)."""
    for key, value in _EXTRACT_DEFAULTS.items():
        if dlt.config.get(key) is None and dlt.config.get(key.removeprefix("sources.pipedrive.")) is None:
            dlt.config[key] = value


def _select(entities: Sequence[str] | None) -> set[str]:
    if entities is None:
        names = set(DEFAULT_ENTITIES)
    else:
        # a string was split at commas: '"deals,persons"' passed, '"[\"deals\"]"' named a table '["deals"]'
        if isinstance(entities, str):
            raise _entities_error(entities, A_LIST)
        names = {str(name).strip() for name in entities if str(name).strip()}
        if not names:  # synced every default table: not what a setting naming the tables to sync says
            raise _entities_error(entities, SOME_TABLES)
        unknown = sorted(names - set(BY_NAME))
        if unknown:
            raise _entities_error(", ".join(unknown), f"names of tables: {', '.join(BY_NAME)}")
    for name in list(names):
        parent = BY_NAME[name].parent
        if parent and BY_NAME[name].strategy in (DEAL_BATCH, PER_RECORD):
            names.add(parent)  # children follow the parents changed in this run
    return names


def _entities_error(value: object, accepted: str) -> SettingError:
    return SettingError("entities", value, accepted, setting_place("entities", own_section()))


def _read_order(entity: Entity) -> tuple[bool, bool]:
    return entity.strategy not in (FULL, PER_PARENT), entity.full_read_hours is not None


def _full_read_interval(entity: Entity, override: float | None) -> float | None:
    if entity.full_read_hours is None:
        return None  # read in full every run
    return entity.full_read_hours if override is None else float(override)


def _shared_lists(selected: set[str]) -> list[Entity]:
    """Small lists the custom-field resolution of the selected entities reads."""
    names = {BY_NAME[name].fields_entity for name in selected} | {
        INHERITED_FIELDS[name] for name in selected if name in INHERITED_FIELDS
    }
    if "leads" in selected:
        names.add(LEAD_LABELS)
    return [BY_NAME[name] for name in sorted(n for n in names if n)]


OAUTH_FIELDS = ("refresh_token", "client_id", "client_secret", "access_token")


def _auth(api_token: str | None, oauth: PipedriveOAuthCredentials | None, section: str | None) -> Auth:
    """OAuth wins when it has a refresh token; OAuth set in part and no token: `OAuthAuth` names what is
    missing (it read "No Pipedrive credentials configured ... or configure OAuth" to one who had).
    `section`: the company's own (`own_section`), which the messages name."""
    oauth_given = oauth is not None and any(getattr(oauth, name, None) for name in OAUTH_FIELDS)
    if oauth_given and (getattr(oauth, "refresh_token", None) or not api_token):
        return OAuthAuth(oauth, oauth_setting(section))
    setting = token_setting(section)
    if api_token:
        return ApiTokenAuth(api_token, setting)
    raise ConfigError(f"No Pipedrive credentials configured. Set {setting}, or configure OAuth.")


def own_section() -> str | None:
    """The active pipeline's name when its own section holds the credentials, an API token or OAuth (a named
    company's: dlt reads them there first), so that messages name the setting to fix; None for the single
    company's."""
    context = Container()[PipelineContext]
    if not context.is_active():
        return None
    name = context.pipeline().pipeline_name
    own = any(dlt.secrets.get(f"{name}.sources.pipedrive.{key}") for key in CREDENTIAL_KEYS)
    return name if own else None


# one DNS label: the company's host is `<company_domain>.pipedrive.com`
_SUBDOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


def _domain_name(company_domain: str | None) -> str | None:
    """The subdomain `company_domain` names (`acme`, `acme.pipedrive.com` or its URL); None when not set.
    Set to anything else, an empty string included, it is refused: with `base_url` set, an empty one
    skipped the check that the credentials are the company's."""
    if company_domain is None:
        return None
    name = str(company_domain).strip().removeprefix("https://").removeprefix("http://")
    name = name.split("/")[0].removesuffix(".pipedrive.com")
    if not _SUBDOMAIN.fullmatch(name):
        raise SettingError(
            "company_domain",
            company_domain,
            "the company's subdomain, the 'acme' of acme.pipedrive.com",
            setting_place("company_domain", own_section()),
        )
    return name


def _base_url(base_url: str | None, domain: str | None) -> str:
    if base_url:
        url = base_url.strip().rstrip("/")
        try:
            parts = urlsplit(url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
            usable = usable and not any(ch.isspace() for ch in url)
        except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
            usable = False
        if not usable:
            raise ConfigError(
                f"base_url {url[:60]!r} is not an http(s) URL such as https://acme.pipedrive.com "
                f"({env_setting('base_url', own_section())})."
            )
        return url
    if not domain:
        setting = env_setting("company_domain", own_section())
        raise ConfigError(
            f"No Pipedrive company configured. Set company_domain ({setting}, the 'acme' of "
            "acme.pipedrive.com) or base_url."
        )
    return COMPANY_URL.format(company_domain=domain)


# ---- resources ---------------------------------------------------------------------------------------------


def _resource(
    entity: Entity,
    ctx: SyncContext,
    built: dict[str, DltResource],
    hard_delete: bool,
    reconcile: DestinationLinks | None,  # a reconcile's (see `_reconcile_links`); None: no reconcile
    full_read_hours: float | None,
    selected: set[str],
) -> DltResource:
    hints: dict[str, Any] = {
        "name": entity.name,
        "primary_key": entity.primary_key,
        "write_disposition": {"disposition": "merge", "strategy": "delete-insert"},
        "columns": _columns(entity, hard_delete),
        "nested_hints": column_types.nested_hints(entity) or None,  # child tables of records dlt normalizes
    }
    if entity.merge_key:
        hints["merge_key"] = entity.merge_key
    if entity.strategy in (UPDATED_SINCE, SORTED):
        children = [c.name for c in ENTITIES if c.parent == entity.name and c.name in selected]
        fetch = _incremental_fetch(entity, ctx, reconcile, hard_delete, children)
        return dlt.resource(_unless_denied(entity, ctx, fetch), **hints)
    if entity.strategy in (FULL, PER_PARENT):
        fetch = _full_fetch(entity, ctx, full_read_hours, hard_delete, force=reconcile is not None)  # all
        return dlt.resource(_unless_denied(entity, ctx, fetch), **hints)
    if entity.strategy in (DEAL_BATCH, PER_RECORD):
        fetch = _children_fetch(entity, ctx, hard_delete)
        return dlt.transformer(_unless_denied(entity, ctx, fetch), data_from=built[entity.parent], **hints)
    raise ValueError(f"{entity.name}: unknown strategy {entity.strategy!r}")


def _unless_denied(entity: Entity, ctx: SyncContext, fetch: Callable[..., Iterator[Any]]) -> Any:
    """An entity the plan or the user's permissions exclude (HTTP 402/403, e.g. installments below the
    Growth plan) is skipped with a warning instead of failing the whole sync; its state stays as it was.
    A used-up budget ends the entity cleanly too (the run stops; see the module docstring)."""

    @functools.wraps(fetch)
    def guarded(*args: Any, **kwargs: Any) -> Iterator[Any]:
        if ctx.monitor.progress(entity.name).skipped:
            ctx.read_done(entity)
            return
        try:
            ctx.check_pipeline()  # before the fetch's first request (a refused child's catch-up asks one)
            yield from fetch(*args, **kwargs)
        except AccessDenied as exc:
            _skip(entity, ctx, exc)
        except BudgetExhausted as exc:
            ctx.pool.stop(exc)
        except PipedriveError as exc:  # the run fails: requests still retrying in the pool give up now
            ctx.pool.fail(exc)
            raise
        finally:
            ctx.read_done(entity)
        ctx.note_stop()

    return guarded


def _skip(entity: Entity, ctx: SyncContext, exc: AccessDenied) -> None:
    ctx.monitor.progress(entity.name).skipped = exc.message
    logger.warning("skipping %s: %s", entity.name, exc.message)


def _columns(entity: Entity, hard_delete: bool) -> dict[str, Any]:
    """Every column's type from the spec (`column_types.py`), the entity's own hints winning."""
    # child rows of a changed parent are replaced as a set: a placeholder marked deleted clears the rows of
    # a parent that has none left. Said either way: dlt keeps a hint a run leaves out, so a pipeline run
    # once with `hard_delete` went on deleting the deleted deals of runs without it.
    deleted: dict[str, Any] = {"data_type": "bool", "nullable": True}
    deleted["hard_delete"] = bool(hard_delete or entity.merge_key)
    hints = {**column_types.root_columns(entity), "is_deleted": deleted, **entity.columns}
    if entity.strategy in (UPDATED_SINCE, SORTED) and entity.cursor_field:
        # A record changed after its page was read can be listed again later in the same run (an
        # ascending read), so one load may hold two versions of an id. dlt's merge keeps an arbitrary one
        # unless told which: the newest, which is also the one the cursor's boundary digest describes (an
        # older one kept would be dropped as unchanged by every later run).
        field = entity.cursor_field
        hints[field] = {**hints.get(field, {}), "dedup_sort": "desc"}
    return {**hints, **column_types.keep_stored_types(entity.name, hints)}


def _reconcile_links(ctx: SyncContext, selected: set[str]) -> DestinationLinks:
    """The destination connection that the reconcile listings of `selected` share (`relinks.py`), closed
    as the last of them is done."""
    links = DestinationLinks(
        e.name for e in ENTITIES if e.name in selected and e.strategy in (UPDATED_SINCE, SORTED)
    )
    ctx.when_done(links.release)
    return links


def _incremental_fetch(
    entity: Entity,
    ctx: SyncContext,
    reconcile: DestinationLinks | None,
    hard_delete: bool,
    children: Sequence[str] = (),
) -> Any:
    initial = render(ctx.start_date, entity.time_format) if ctx.start_date else None
    # children whose changes leave this record unstamped: a reconcile reads them for every record
    unseen = [c for c in children if BY_NAME[c].reconcile_all_parents] if reconcile is not None else []

    def fetch() -> Iterator[Any]:
        state = dlt.current.resource_state()
        _reread_if_relabelled(entity, ctx, state)
        refused = _still_refused(entity, ctx, state, children)
        following = [c for c in children if c not in refused]
        _catch_up_children(entity, state, following)
        ctx.children_followed[entity.name] = dict(state.get(_CHILDREN_KEY) or {})
        reread = [c for c in unseen if c in following]
        history = keeps_history(entity.name)
        if reread and read_before(state) and history and not state.get(_HISTORY_SEEDED_KEY):
            # a history to seed takes every record: loaded again, they carry their children along
            logger.info("%s: reconcile reads every record again for its %s", entity.name, ", ".join(reread))
            forget_cursor(state)
        # a history started on this list after it was loaded holds only the records changed since; a read
        # from the start (a first one, a cursor forgotten) gives it every record, and so does a reconcile
        # (below). A history turned off misses changes meanwhile: seeded again once it is back on
        seeded = history and (not read_before(state) or state.get(_HISTORY_SEEDED_KEY))
        if not history:
            state.pop(_HISTORY_SEEDED_KEY, None)
        cursor = CursorState(state, entity, initial)
        since = cursor.since  # where this run's read starts: a reconcile compares the records before it
        field, at_since = entity.cursor_field or "update_time", set()  # the records read at `since`
        output = ctx.outputs.output(entity, hard_delete)
        coverage = _Coverage(entity)
        with ctx.timed(entity):
            started = ctx.run_started()
            read = ctx.read(entity).incremental(cursor.since, run_until(started))
            for batch in read.batches():
                if batch is None:
                    yield None  # nothing ready: dlt serves the other resources meanwhile
                    continue
                rows = ctx.records(entity, batch)
                coverage.add(batch.tag.index, rows)
                admitted = cursor.admit(rows)
                if reread:  # their children are read with them: not again by the reconcile (below)
                    at_since.update(
                        row.get(entity.primary_key) for row in admitted if row.get(field) == since
                    )
                yield from output.page(admitted)
                del rows, admitted  # not held while waiting for the next page (a page of dicts per resource)
            yield from output.flush()
            gap = coverage.gap()
            if gap is not None:
                logger.info(
                    "%s: records vanished ahead of the offset while paging; next run reads from %s",
                    entity.name,
                    gap,
                )
            rewind = _earliest(ctx.rewinds.get(entity.name), gap)
            settled = settled_before(started, entity.time_format)
            cursor.commit(state, read.complete, read.resume_from(), rewind, settled)
            _children_followed(state, [c for c in following if not ctx.monitor.progress(c).skipped])
            if reconcile is not None and read.complete:
                # the listing of live ids reads every record whole: a history not seeded yet gets them all,
                # at no request more (the entity's table gets them again, unchanged; not with children
                # selected: their transformers would read every record's children); else the records a
                # merge moved unstamped go to the table (`relinks.py`)
                seed = history and not seeded and not children
                listed = ctx.outputs.output(entity, hard_delete)
                yield from _reconcile_listing(
                    entity,
                    ctx,
                    listed,
                    since,
                    reconcile,
                    everything=seed,
                    children=() if seed else reread,
                    read=at_since,
                )
                yield from listed.flush()
                seeded = seeded or seed
            if seeded and read.complete:
                state[_HISTORY_SEEDED_KEY] = True

    return fetch


# the entity's option labels as its rows were last labelled (custom_fields_hook.options_summary)
_OPTION_LABELS_KEY = "option_labels"
# {child table: the cursor of this (parent) entity after the last run that also read that child}
_CHILDREN_KEY = "children_followed"


# {child table: a parent id to ask for it} for children Pipedrive refused (402/403) when last asked
_REFUSED_KEY = "children_refused"


def _still_refused(entity: Entity, ctx: SyncContext, state: Any, children: Sequence[str]) -> set[str]:
    """The children of `entity` Pipedrive still refuses (plan or permission), each skipped for this run.

    A refused child is not marked as read along with its parent (`_children_followed`), and while it stays
    refused its lapse must not make every run read the parent again (`_catch_up_children`): a company
    below the Growth plan would re-read every deal on each run for its installments. So one request for
    one parent (the cost of the child's own first request, which it then no longer makes) asks whether
    the refusal still holds. Once it is lifted (a plan upgrade, a permission granted), the child counts
    again, and `_catch_up_children` reads the parent from where the child was last read (or in full)."""
    flagged = state.get(_REFUSED_KEY)
    if not flagged:
        return set()
    refused: set[str] = set()
    for name in [c for c in children if c in flagged]:
        try:
            _ask(BY_NAME[name], ctx, flagged[name])
        except AccessDenied as exc:
            _skip(BY_NAME[name], ctx, exc)
            refused.add(name)
            continue
        logger.info("%s: Pipedrive no longer refuses it; reading what it missed", name)
        del flagged[name]
    return refused


def _ask(child: Entity, ctx: SyncContext, parent_id: Any) -> None:
    """One request for the children of one parent (its answer is not loaded: the catch-up reads it)."""
    listing = child.listings[0]
    path, params = parents_query(child, listing, (parent_id,))
    ctx.client.get(path, params, cost=listing.cost or child.cost, label=child.name, missing_ok=True)


def _note_refused(child: Entity, ctx: SyncContext, parent_id: Any) -> None:
    """`child` was refused in this run: it has not followed its parent since the parent's last run with
    it (whichever of the two generators finishes first), and the next run asks before reading for it."""
    state = dlt.current.resource_state(child.parent or "")
    state.setdefault(_REFUSED_KEY, {})[child.name] = parent_id
    before = ctx.children_followed.get(child.parent or "", {}).get(child.name)
    followed = state.setdefault(_CHILDREN_KEY, {})
    if before is None:
        followed.pop(child.name, None)
    else:
        followed[child.name] = before


def _catch_up_children(entity: Entity, state: Any, children: Sequence[str]) -> None:
    """Read `entity` again from where a child selected now stopped following it.

    Children (deal products, installments, flow, participants; product variations) are read only for the
    parents a run loads. A run without them (`--entities deals`) moves the parent's cursor past parents
    whose children then changed unseen, and a child table added to a pipeline that loaded its parents
    before would hold only the children of parents changed since. The parent's state notes its cursor
    after each run per child read along (`_children_followed`); the cursor goes back to the oldest of
    them, and to the start (or the start date) for a child never read with it. State of earlier versions,
    without that note: a child whose table exists counts as having followed.
    """
    if not children or not read_before(state):
        return  # a first load: every parent is read, and every child with it
    cursor = saved_cursor(state)
    followed = state.get(_CHILDREN_KEY)
    if followed is None:
        followed = {name: cursor for name in children if _has_table(name)}
    behind = [followed.get(name) for name in children]
    if None in behind:
        logger.info(
            "%s: reading every record again: %s never read along with it",
            entity.name,
            ", ".join(n for n, at in zip(children, behind, strict=True) if at is None),
        )
        forget_cursor(state)
    elif cursor and min(behind) < cursor:
        logger.info("%s: reading from %s again, where its children were last read", entity.name, min(behind))
        rewind_cursor(state, min(behind))


def _children_followed(state: Any, children: Sequence[str]) -> None:
    cursor = saved_cursor(state)
    if children and cursor:
        state[_CHILDREN_KEY] = {**(state.get(_CHILDREN_KEY) or {}), **dict.fromkeys(children, cursor)}


def _has_table(name: str) -> bool:
    """Whether the pipeline's schema has `name` with columns (loaded before)."""
    try:
        schema = dlt.current.pipeline().default_schema
    except Exception:  # no pipeline (the source iterated directly) or no schema yet
        return False
    return materialized(schema, name)


def _reread_if_relabelled(entity: Entity, ctx: SyncContext, state: Any) -> None:
    """An option relabelled (or removed) since the last run: read `entity` again from the start date.

    Pipedrive does not stamp records when an option of an enum/set field (or a deal or lead label) gets
    another label, so the records not changed since would keep the old label for good. The field
    definitions the run reads anyway tell it (compared with a summary kept in the entity's state, a few
    bytes per option); the cursor is then forgotten, so this run reads the entity in full, stopping and
    resuming like a first load. Cost: one full read of that entity per run that sees such a change
    (rare: an admin action), no request otherwise. Renamed fields keep their columns and new options or
    fields change no stored value: neither triggers a re-read. A field whose values were loaded while the
    definitions did not list it (as text in `cf_<8 chars>`) and that they list now moves to a column of
    its own, typed: that re-reads the entity once too.
    """
    changed = _relabelled(entity, ctx, state)
    if changed and (state.get(CURSOR_STATE_KEY) or state.get(LEGACY_CURSOR_KEY)):
        _log_reread(entity, changed)
        forget_cursor(state)


def _relabelled(entity: Entity, ctx: SyncContext, state: Any) -> list[str]:
    """The option fields of `entity` relabelled (or with an option removed) since the summary in its
    `state`, which is brought up to date, and its fields that move to a column of their own this run."""
    resolution = next((h for h in ctx.hooks if isinstance(h, CustomFieldResolution)), None)
    if resolution is None or not entity.fields_entity:
        return []
    try:
        labels = resolution.option_labels(entity, ctx)
    except PipedriveError:
        return []  # no definitions now: the first page's resolution reports why; the summary stays
    previous = state.get(_OPTION_LABELS_KEY)
    changed = relabelled_options(previous, labels)
    state[_OPTION_LABELS_KEY] = options_summary(labels, previous)
    return changed + resolution.moved_fields(entity, ctx)


def _log_reread(entity: Entity, changed: list[str]) -> None:
    logger.info(
        "%s: option labels changed in Pipedrive (or are listed again after a run without them), or fields "
        "once unlisted have columns of their own now (%s);"
        " reading every %s record again so that records not changed since get the new labels and columns",
        entity.name,
        ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""),
        entity.name,
    )


def _earliest(*values: str | None) -> str | None:
    return min((v for v in values if v is not None), default=None)


class _Coverage:
    """Whether the pages of a v1 offset listing covered it without a gap, from their contents alone.

    Offsets shift left when records ahead of the read position are deleted (or, in a list sorted by update
    time, updated) between two page requests; pages overlap a little, but more shifting than the overlap
    skips records, and concurrent pages are requested at offsets known in advance. Two pages that share a
    record (same id and same update time, so the record did not move) cover everything between them, so
    the pages cover the listing without a gap when the graph of shared records is connected. Otherwise
    the cursor may not pass the newest record of the part holding the oldest record read (the records
    beyond the gap are read by the next run). No request is added; per page only the ids at its two ends
    are kept (enough for the small overlaps of offset paging; a wider shift only costs a re-read).
    """

    EDGE = 32  # records kept from each end of a page

    def __init__(self, entity: Entity) -> None:
        self.on = entity.paging == OFFSET
        self.key, self.field = entity.primary_key, entity.cursor_field
        self.pages: dict[int, list[tuple[frozenset[int], frozenset[int], str, str]]] = {}

    def add(self, listing: int, rows: list[Row]) -> None:
        if not self.on:
            return
        # a list without a cursor (a full read) is covered or not: its records all count as "" in time
        marks = [(hash((r.get(self.key), t)), t) for r in rows if isinstance(t := self._time(r), str)]
        if marks:
            head = frozenset(m for m, _ in marks[: self.EDGE])
            tail = frozenset(m for m, _ in marks[-self.EDGE :])
            times = [t for _, t in marks]
            self.pages.setdefault(listing, []).append((head, tail, min(times), max(times)))

    def _time(self, row: Row) -> Any:
        return row.get(self.field) if self.field else ""

    def gap(self) -> str | None:
        """Where the cursor must stay when a listing's pages left a gap (None: no gap)."""
        points = [_covered_up_to(pages) for pages in self.pages.values()]
        return _earliest(*points)


def _covered_up_to(pages: list[tuple[frozenset[int], frozenset[int], str, str]]) -> str | None:
    """The newest time covered without a gap from the oldest record read; None when pages connect."""
    parent = list(range(len(pages)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_head: dict[int, int] = {}
    for index, (head, _tail, _low, _high) in enumerate(pages):
        for mark in head:
            by_head.setdefault(mark, index)
    for index, (_head, tail, _low, _high) in enumerate(pages):
        for mark in tail:
            other = by_head.get(mark)
            if other is not None:
                parent[root(other)] = root(index)
    groups = {root(i) for i in range(len(pages))}
    if len(groups) <= 1:
        return None
    oldest = root(min(range(len(pages)), key=lambda i: pages[i][2]))
    return max(pages[i][3] for i in range(len(pages)) if root(i) == oldest)


def _reconcile_listing(
    entity: Entity,
    ctx: SyncContext,
    output: Output,
    since: str | None,
    links: DestinationLinks,
    everything: bool = False,
    children: Sequence[str] = (),
    read: Collection[Any] = (),
) -> Iterator[Any]:
    """Every id Pipedrive lists for `entity` now, read in id order (stable under concurrent updates) and
    noted as its live ids. The listed records go to `output`: all of them if `everything`, else those older
    than `since` that a merge of persons or organizations moved without stamping them (`relinks.py`); the
    other records up to `since` go to the transformers of `children` only (`ParentsOnly`), but for those
    the incremental read of this run loaded (`read`: its records at `since`; the newer ones it loaded all),
    which gave them their children. No request beyond the listing (the lists have no id-only form)."""
    by_id = {"sort_by": "id", "sort_direction": "asc"} if entity.paging == CURSOR else {"sort": "id ASC"}
    stored = None if everything else StoredLinks.read(entity, since, links)
    links.release(entity.name)  # its query is done: the connection need not wait for its listing
    key, field = entity.primary_key, entity.cursor_field or "update_time"
    if children and since is not None:
        logger.info("%s: reconcile reads the %s of every record", entity.name, ", ".join(children))
    ids: set[Any] = set()
    moved = 0
    for listing in entity.listings:
        for page in ctx.pages(entity, listing, by_id, raw=not everything):
            ids.update(row.get(key) for row in page.items)
            if everything:
                yield from output.page(page.items)
                continue
            rows = stored.moved(page.items) if stored is not None else []
            if children and since is not None:  # a moved record carries its children along (`output`)
                loaded = {row.get(key) for row in rows}
                unchanged = [
                    {key: row.get(key), field: moment}
                    for row in page.items
                    if isinstance(moment := row.get(field), str)
                    and (moment < since or (moment == since and row.get(key) not in read))
                    and row.get(key) not in loaded
                ]
                if unchanged:
                    yield output.parents_only(unchanged, children)
            if rows:
                moved += len(rows)
                yield from output.page(ctx.shape(entity, listing, rows))
    ids.discard(None)
    ctx.monitor.record_live_ids(entity.name, ids)
    if moved:
        logger.info(
            "%s: reconcile loads %d records whose person or organization changed without a new update "
            "time (a merge in Pipedrive)",
            entity.name,
            moved,
        )


def _full_fetch(
    entity: Entity, ctx: SyncContext, interval_hours: float | None, hard_delete: bool, force: bool = False
) -> Any:
    def fetch() -> Iterator[Any]:
        with ctx.timed(entity):
            state = dlt.current.resource_state()
            parents = _parents_digest(entity, ctx)
            # projects are read once a day: a relabelled option left the labels of the rows loaded before
            # stale until then; the read is due now (and stays due until a complete read, the read time
            # being gone). Only the rows whose labels changed are loaded (`_Changes` digests resolved rows)
            changed = _relabelled(entity, ctx, state)
            if changed and state.get("last_full_read"):
                _log_reread(entity, changed)
                state.pop("last_full_read", None)
            if not force and not _full_read_due(state, ctx, interval_hours, parents):
                return  # read recently: no request, nothing loaded, no live ids noted
            output = ctx.outputs.output(entity, hard_delete)
            # a history started on a list loaded before gets a version of every record from this read,
            # which reads them all anyway (only the changed ones would reach it otherwise)
            history = keeps_history(entity.name)
            seeded = not history or state.get(_HISTORY_SEEDED_KEY)
            changes = _Changes(entity, state.get("digests") if seeded else None)
            coverage = _Coverage(entity)
            for rows in _full_pages(entity, ctx, coverage):
                if rows is None:
                    yield None
                    continue
                yield from output.page(changes.changed(rows))
            yield from output.flush()
            if ctx.pool.stopped is not None:
                return  # incomplete: digests and read time stay, the next run reads it all again
            if coverage.gap() is not None:  # unlisted records must not count as deleted: no live ids now
                logger.info("%s: records vanished while paging; the next run reads all again", entity.name)
                state.pop("last_full_read", None)
                return
            state["digests"] = changes.current.pack()
            if history:
                state[_HISTORY_SEEDED_KEY] = True
            else:  # off: the records changed meanwhile are not in it, the next start seeds it again
                state.pop(_HISTORY_SEEDED_KEY, None)
            ctx.monitor.record_live_ids(entity.name, changes.seen)
            if interval_hours is not None:
                state["last_full_read"] = ctx.run_started().isoformat()
                state["parents_digest"] = parents

    return fetch


# set in a list's state once a complete read gave its history (`history.py`) every record
_HISTORY_SEEDED_KEY = "history_seeded"


def _full_pages(entity: Entity, ctx: SyncContext, coverage: _Coverage) -> Iterator[list[Row] | None]:
    """Shaped records of a full read: shared small lists from the run's memo, others read concurrently.

    The first listing's pages go on as they arrive (a large list is never held whole); a later listing's
    are held until every page arrived and go on in listing order, so that a record in two listings is the
    first listing's (`_Changes` keeps the first it sees)."""
    if entity.name in _MEMO_LISTS:
        yield ctx.full_rows(entity)
        return
    read = ctx.read(entity)
    if entity.strategy == PER_PARENT:
        for parent in ctx.full_rows(BY_NAME[entity.parent]):
            if parent.get("id") is not None:
                read.full({entity.parent_param: parent["id"]}, parent=parent["id"])
    else:
        read.full()
    held: dict[int, list[Row]] = {}
    for batch in read.batches():
        if batch is None:
            yield None
            continue
        rows = ctx.records(entity, batch)
        coverage.add(batch.tag.index, rows)
        if batch.tag.index == 0:
            yield rows
        else:
            held.setdefault(batch.tag.index, []).extend(rows)
        del rows
    for index in sorted(held):
        yield held[index]


# lists other entities read too (field definitions, boards for phases, lead labels): fetched once per run
_MEMO_LISTS = {e.name for e in ENTITIES if e.name.endswith("_fields")} | {"boards", LEAD_LABELS}


class _Changes:
    """Records of a full read whose content changed since the last run (`record_digests`: a packed digest
    per record in the state).

    The digests live in the resource state, which dlt commits only with a successful load. Ids that vanished
    are flagged after the load by `deletions.flag_vanished` from the live ids noted here."""

    def __init__(self, entity: Entity, saved: Any) -> None:
        self.entity = entity
        self.previous = DigestTable.from_state(saved)
        self.current = DigestTable()
        self.seen: set[Any] = set()  # the ids listed: the live ids for the deletion check

    def changed(self, rows: Iterable[Row]) -> list[Row]:
        out: list[Row] = []
        for row in rows:
            key = row.get(self.entity.primary_key)
            if key in self.seen:
                continue  # listed twice (archived between the reads of its two lists): first wins
            self.seen.add(key)
            packed = entry(row, self.entity.primary_key)
            self.current.add(*packed)
            if not self.previous.holds(*packed):
                out.append(row)
        return out


def _full_read_due(state: Any, ctx: SyncContext, interval_hours: float | None, parents: str | None) -> bool:
    """Whether a list with a full-read interval must be read now (see `entities.py`)."""
    last = state.get("last_full_read")
    if interval_hours is None or not last or state.get("parents_digest") != parents:
        return True
    return ctx.run_started() - datetime.fromisoformat(last) >= timedelta(hours=interval_hours)


def _parents_digest(entity: Entity, ctx: SyncContext) -> str | None:
    """PER_PARENT: the parent list's content (already read this run); a changed list means a read now."""
    if entity.strategy != PER_PARENT:
        return None
    return digest({"rows": ctx.full_rows(BY_NAME[entity.parent])})


def _children_fetch(entity: Entity, ctx: SyncContext, hard_delete: bool) -> Any:
    """Children of the parents changed in this run: batched by deal ids (DEAL_BATCH) or one request per
    parent (PER_RECORD); a placeholder per parent without children clears rows it had before."""

    def fetch(items: Any, meta: Any = None) -> Iterator[Any]:
        unchanged_parents = isinstance(meta, ParentsOnly)
        if unchanged_parents:
            if entity.name not in meta.children:
                return
            items, meta = meta.rows, None
        ids = parent_ids(items, meta, entity.parent or "")
        if not ids:
            return
        if ctx.pool.halted:
            if not unchanged_parents:  # those: the next reconcile reads their children
                _rewind_parents(entity, ctx, items)  # the run stopped before these parents' children
            return
        output = ctx.outputs.output(entity, hard_delete)
        sets = _ChildSets(entity, hold=unchanged_parents)
        with ctx.timed(entity):
            listing = ctx.read(entity)
            read = listing.deal_batches(ids) if entity.strategy == DEAL_BATCH else listing.per_record(ids)
            try:
                for batch in read.batches():
                    if batch is None:
                        yield None
                        continue
                    rows = ctx.records(entity, batch)
                    parents = batch.tag.parent if entity.strategy == DEAL_BATCH else [batch.tag.parent]
                    if entity.derive:
                        for row in rows:
                            entity.derive(row, batch.tag.parent)
                    if sets.add(batch.tag.parent, rows):
                        yield from output.page(rows + _placeholders(entity, ctx, parents, rows))
                    del rows
                for parent, rows in sets.changed(read.complete):
                    yield from output.page(rows + _placeholders(entity, ctx, [parent], rows))
            except AccessDenied:
                sets.commit(ids, complete=False)
                _note_refused(entity, ctx, ids[0])
                raise
            sets.commit(ids, read.complete)
            yield from output.flush()
            if not read.complete and not unchanged_parents:
                _rewind_parents(entity, ctx, items)

    return fetch


class _ChildSets:
    """Each parent's set of children as last loaded, for the children a reconcile reads for every parent
    (`Entity.reconcile_all_parents`: product variations, organization relationships): a digest per parent
    in the transformer's state (16 bytes, `record_digests.set_entry`), which dlt commits with the load.
    The children of parents a reconcile reads only for them (`ParentsOnly`) are held until the read is
    done and loaded where their set differs: a reconcile without changes loaded them all (706 rows at
    `small`). The children of changed parents are loaded as they come, and their digests noted."""

    KEY = "child_sets"

    def __init__(self, entity: Entity, hold: bool) -> None:
        self.on = entity.reconcile_all_parents
        self.hold = hold and self.on
        self.digests: dict[Any, list[str]] = {}  # parent -> its children's digests, as they go to the output
        self.rows: dict[Any, list[Row]] = {}  # parent -> its children held

    def add(self, parent: Any, rows: list[Row]) -> bool:
        """Note a page of `parent`'s children; whether to load it now (else `changed` may give it)."""
        if self.on:
            self.digests.setdefault(parent, []).extend(digest(row) for row in rows)
        if self.hold:
            self.rows.setdefault(parent, []).extend(rows)
        return not self.hold

    def changed(self, complete: bool) -> Iterator[tuple[Any, list[Row]]]:
        """The held parents whose children differ from the ones last loaded; none where the read did not
        complete (a set read in part would replace the whole: the next reconcile reads them again)."""
        if not self.hold or not complete:
            return
        table = DigestTable.from_state(dlt.current.resource_state().get(self.KEY))
        for parent, rows in self.rows.items():
            if not table.holds(*set_entry(parent, self.digests[parent])):
                yield parent, rows

    def commit(self, parents: Sequence[Any], complete: bool) -> None:
        """Note the children of `parents` as loaded now; unknown (never equal) where a read that loaded
        them as they came stopped early."""
        if not self.on or (self.hold and not complete):
            return  # held and not loaded: as they were
        if complete:
            entries = dict(set_entry(parent, self.digests.get(parent, ())) for parent in parents)
        else:
            entries = {set_entry(parent, ())[0]: _UNKNOWN for parent in parents}
        state = dlt.current.resource_state()
        state[self.KEY] = DigestTable.from_state(state.get(self.KEY)).updated(entries).pack()


_UNKNOWN = 0  # the digest of a set that was not read whole: no set's digest (one in 2**64)


def _rewind_parents(entity: Entity, ctx: SyncContext, items: Any) -> None:
    """The run stopped before every child of these parents was read: the parents' cursor goes back to
    the oldest of them, so that the next run reads them (and their children) again."""
    parent = BY_NAME[entity.parent or ""]
    oldest = _oldest(items, parent)
    if oldest is not None:
        ctx.rewind(parent, oldest)


def _oldest(items: Any, parent: Entity) -> str | None:
    """The oldest cursor value among the parent records of a transformer's item, in the parent's format."""
    field = parent.cursor_field or "update_time"
    if isinstance(items, pa.Table):
        values = items.column(field).to_pylist() if field in items.column_names else []
    else:
        values = [row.get(field) for row in (items if isinstance(items, list) else [items])]
    rendered = [render(v, parent.time_format) if isinstance(v, datetime) else v for v in values if v]
    return min(rendered, default=None)


def _placeholders(entity: Entity, ctx: SyncContext, parent_ids: Sequence[Any], rows: list[Row]) -> list[Row]:
    """Rows that only clear a parent's old children: merge on `merge_key` deletes the parent's rows in the
    destination, and `is_deleted` (a hard-delete column for these tables) keeps the placeholder out. None
    while the table holds no rows to clear (`Outputs.replaces`)."""
    key = entity.merge_key
    if not key or not ctx.outputs.replaces(entity):
        return []
    with_rows = {row.get(key) for row in rows}
    return [
        {entity.primary_key: _placeholder_id(entity, pid), key: pid, "is_deleted": True}
        for pid in parent_ids
        if pid not in with_rows
    ]


def _placeholder_id(entity: Entity, parent_id: Any) -> Any:
    if entity.primary_key == "id" and isinstance(parent_id, int):
        return -parent_id  # never a real id, and of the column's type
    return f"none:{parent_id}"
