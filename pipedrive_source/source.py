"""The dlt source: a small generic engine that turns each entry of `entities.ENTITIES` into a dlt resource.

Every table is written with `merge` on its primary key. How a run finds what changed depends on the entity's
strategy (see `entities.py`); all strategies end in the same place: pages of records, shaped by the record
hooks (custom-field resolution plugs in there), yielded to dlt.

Boundary rule for incremental cursors: `updated_since` is inclusive, so the records at the last loaded
`update_time` come back on the next run. dlt's incremental drops the ones whose *content* is unchanged (the
dedup key is the whole record, not its id), so a no-change run loads nothing while a record changed again
within the same second is still loaded.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import dlt
import orjson
from dlt.common.typing import TSecretStrValue
from dlt.extract.resource import DltResource

from .client import PipedriveClient
from .custom_fields_hook import CustomFieldResolution
from .entities import (
    BY_NAME,
    CURSOR,
    DEAL_BATCH,
    DEFAULT_ENTITIES,
    ENTITIES,
    FULL,
    PER_PARENT,
    PER_RECORD,
    SORTED,
    UPDATED_SINCE,
    Entity,
)
from .errors import TOKEN_SETTING, AccessDenied, ConfigError
from .limiter import RateLimiter
from .oauth import ApiTokenAuth, Auth, OAuthAuth, PipedriveOAuthCredentials
from .run import RecordHook, Row, SyncContext, SyncMonitor
from .settings import COMPANY_URL, DEAL_IDS_PER_REQUEST, DEFAULT_MAX_TABLE_NESTING, PAGE_SIZE, HttpSettings
from .timefmt import render, rfc3339, start_date_value

logger = logging.getLogger("pipedrive_source")


@dlt.source(name="pipedrive", section="pipedrive", max_table_nesting=DEFAULT_MAX_TABLE_NESTING)
def pipedrive_source(
    api_token: TSecretStrValue | None = dlt.secrets.value,
    company_domain: str | None = dlt.config.value,
    base_url: str | None = None,
    entities: Sequence[str] | None = None,
    start_date: str | None = None,
    oauth: PipedriveOAuthCredentials | None = None,
    hard_delete: bool = False,
    reconcile: bool = False,
    page_size: int = PAGE_SIZE,
    max_attempts: int = HttpSettings.max_attempts,
    backoff_base_s: float = HttpSettings.backoff_base_s,
    monitor: SyncMonitor | None = None,
    limiter: RateLimiter | None = None,
    record_hooks: Sequence[RecordHook] = (),
    resolve_custom_fields: bool = True,
    keep_option_ids: bool = False,
    full_read_interval_hours: float | None = None,
) -> list[DltResource]:
    """All Pipedrive entities of one company as dlt resources (one table each), merged on their primary key.

    Args:
        api_token: personal API token (`SOURCES__PIPEDRIVE__API_TOKEN`); not needed with `oauth`.
        company_domain: `<company_domain>.pipedrive.com`; also checked against the token's company.
        base_url: overrides the company URL (e.g. the emulator's `http://127.0.0.1:PORT`).
        entities: table names to load (default: all but the opt-in per-deal ones, deal_flow and
            deal_participants). Children of deals pull in `deals`.
        start_date: first run loads records updated since then (default: the whole history).
        oauth: access/refresh token and client id/secret (`[sources.pipedrive.oauth]`).
        hard_delete: remove records Pipedrive reports deleted instead of keeping them with `is_deleted`.
        reconcile: also list every id of the incrementally loaded entities (a full read, no rows loaded),
            so that `deletions.flag_vanished` can flag records deleted in Pipedrive.
        page_size: records per page (Pipedrive allows up to 500).
        monitor: receives progress and the run's figures (requests, tokens, rows per entity).
        limiter: a shared rate limiter (see `limiter.RateLimiter`); default: none, 429s are waited out.
        record_hooks: functions applied to every page of records before it is yielded (after the
            custom-field resolution).
        resolve_custom_fields: hash keys -> readable columns, option ids -> labels, plus the tables
            `custom_fields` and `custom_field_options` (see `custom_fields.py`); False loads raw values.
        keep_option_ids: keep the raw option ids next to their labels (`<column>_id`, `<column>_ids`).
        full_read_interval_hours: how often the lists that can be neither filtered nor sorted (call_logs,
            tasks, phases) are re-read in full (default: each entity's own, 24 h; 0: every run). See
            `entities.py`; `reconcile` and a full refresh read them anyway.
    """
    selected = _select(entities)
    if not 1 <= page_size <= PAGE_SIZE:
        raise ConfigError(f"page_size must be between 1 and {PAGE_SIZE}, not {page_size}.")
    if full_read_interval_hours is not None and not full_read_interval_hours >= 0:
        raise ConfigError(f"full_read_interval_hours must be 0 or more, not {full_read_interval_hours}.")
    http = HttpSettings(max_attempts=max(1, max_attempts), backoff_base_s=max(0.0, backoff_base_s))
    client = PipedriveClient(_base_url(base_url, company_domain), _auth(api_token, oauth), http, limiter)
    monitor = monitor or SyncMonitor()
    monitor.hard_delete = hard_delete
    resolution = CustomFieldResolution(keep_option_ids=keep_option_ids) if resolve_custom_fields else None
    hooks = (resolution, *record_hooks) if resolution else tuple(record_hooks)  # resolution first
    ctx = SyncContext(
        client,
        monitor,
        start_date_value(start_date),
        page_size,
        hooks,
        _domain_name(company_domain),
    )
    built: dict[str, DltResource] = {}
    for entity in ENTITIES:
        if entity.name in selected:
            interval = _full_read_interval(entity, full_read_interval_hours)
            built[entity.name] = _resource(entity, ctx, built, hard_delete, reconcile, interval)
    # small full reads first: their responses fix the run's server time before incremental reads need it,
    # and field definitions are in hand before the records whose custom fields they describe
    # (lists with a full-read interval last among them: their check needs the server time)
    order = sorted(ENTITIES, key=_read_order)
    resources = [built[e.name] for e in order if e.name in built]
    if resolution is not None:
        resources += resolution.resources(ctx, [e for e in ENTITIES if e.name in built])
    return resources


# ---- configuration -----------------------------------------------------------------------------------------


def _select(entities: Sequence[str] | str | None) -> set[str]:
    if entities is None or entities == "" or entities == []:
        names = set(DEFAULT_ENTITIES)
    else:
        raw = entities.split(",") if isinstance(entities, str) else entities
        names = {str(name).strip() for name in raw if str(name).strip()}
        unknown = sorted(names - set(BY_NAME))
        if unknown:
            raise ConfigError(f"Unknown entity {', '.join(unknown)}. Known entities: {', '.join(BY_NAME)}.")
    for name in list(names):
        parent = BY_NAME[name].parent
        if parent and BY_NAME[name].strategy in (DEAL_BATCH, PER_RECORD):
            names.add(parent)  # children follow the parents changed in this run
    return names


def _read_order(entity: Entity) -> tuple[bool, bool]:
    return entity.strategy not in (FULL, PER_PARENT), entity.full_read_hours is not None


def _full_read_interval(entity: Entity, override: float | None) -> float | None:
    if entity.full_read_hours is None:
        return None  # read in full every run
    return entity.full_read_hours if override is None else float(override)


def _auth(api_token: str | None, oauth: PipedriveOAuthCredentials | None) -> Auth:
    if oauth is not None and getattr(oauth, "refresh_token", None):
        return OAuthAuth(oauth)
    if api_token:
        return ApiTokenAuth(api_token)
    raise ConfigError(f"No Pipedrive credentials configured. Set {TOKEN_SETTING}, or configure OAuth.")


def _domain_name(company_domain: str | None) -> str | None:
    if not company_domain:
        return None
    name = company_domain.strip().removeprefix("https://").removeprefix("http://").split("/")[0]
    return name.removesuffix(".pipedrive.com") or None


def _base_url(base_url: str | None, company_domain: str | None) -> str:
    if base_url:
        url = base_url.strip().rstrip("/")
        if (
            not url.startswith(("http://", "https://"))
            or "://" not in url
            or len(url.split("://", 1)[1]) == 0
        ):
            raise ConfigError(f"base_url {url[:60]!r} is not an http(s) URL (SOURCES__PIPEDRIVE__BASE_URL).")
        return url
    domain = _domain_name(company_domain)
    if not domain:
        raise ConfigError(
            "No Pipedrive company configured. Set company_domain (SOURCES__PIPEDRIVE__COMPANY_DOMAIN, the "
            "'acme' of acme.pipedrive.com) or base_url."
        )
    return COMPANY_URL.format(company_domain=domain)


# ---- resources ---------------------------------------------------------------------------------------------


def _resource(
    entity: Entity,
    ctx: SyncContext,
    built: dict[str, DltResource],
    hard_delete: bool,
    reconcile: bool,
    full_read_hours: float | None,
) -> DltResource:
    hints: dict[str, Any] = {
        "name": entity.name,
        "primary_key": entity.primary_key,
        "write_disposition": {"disposition": "merge", "strategy": "delete-insert"},
        "columns": _columns(entity, hard_delete),
    }
    if entity.merge_key:
        hints["merge_key"] = entity.merge_key
    if entity.strategy in (UPDATED_SINCE, SORTED):
        return dlt.resource(_unless_denied(entity, ctx, _incremental_fetch(entity, ctx, reconcile)), **hints)
    if entity.strategy in (FULL, PER_PARENT):
        fetch = _full_fetch(entity, ctx, full_read_hours, force=reconcile)  # reconcile lists everything
        return dlt.resource(_unless_denied(entity, ctx, fetch), **hints)
    if entity.strategy in (DEAL_BATCH, PER_RECORD):
        fetch = (
            _deal_batch_fetch(entity, ctx)
            if entity.strategy == DEAL_BATCH
            else _per_record_fetch(entity, ctx)
        )
        return dlt.transformer(_unless_denied(entity, ctx, fetch), data_from=built[entity.parent], **hints)
    raise ValueError(f"{entity.name}: unknown strategy {entity.strategy!r}")


def _unless_denied(entity: Entity, ctx: SyncContext, fetch: Callable[..., Iterator[Any]]) -> Any:
    """An entity the plan or the user's permissions exclude (HTTP 402/403, e.g. installments below the
    Growth plan) is skipped with a warning instead of failing the whole sync; its state stays as it was."""

    @functools.wraps(fetch)
    def guarded(*args: Any, **kwargs: Any) -> Iterator[Any]:
        if ctx.monitor.progress(entity.name).skipped:
            return
        try:
            yield from fetch(*args, **kwargs)
        except AccessDenied as exc:
            ctx.monitor.progress(entity.name).skipped = exc.message
            logger.warning("skipping %s: %s", entity.name, exc.message)

    return guarded


def _columns(entity: Entity, hard_delete: bool) -> dict[str, Any]:
    deleted: dict[str, Any] = {"data_type": "bool", "nullable": True}
    if hard_delete or entity.merge_key:
        # child rows of a changed parent are replaced as a set: a placeholder marked deleted clears the
        # rows of a parent that has none left
        deleted["hard_delete"] = True
    return {"is_deleted": deleted, **entity.columns}


def _row_content(row: Row) -> list[str]:
    """Incremental dedup key: every column, so only identical records count as already loaded."""
    return sorted(row)


def _incremental_fetch(entity: Entity, ctx: SyncContext, reconcile: bool) -> Any:
    initial = render(ctx.start_date, entity.time_format) if ctx.start_date else None

    def fetch(
        cursor: dlt.sources.incremental[str] = dlt.sources.incremental(  # noqa: B008 - dlt binds defaults
            entity.cursor_field,
            initial_value=initial,
            primary_key=_row_content,
            on_cursor_value_missing="include",
        ),
    ) -> Iterator[list[Row]]:
        since = cursor.start_value
        with ctx.timed(entity):
            for listing in entity.listings:
                if entity.strategy == UPDATED_SINCE:
                    yield from _updated_since_pages(entity, listing, ctx, since)
                else:
                    yield from _sorted_pages(entity, listing, ctx, since)
            if reconcile:
                ctx.monitor.record_live_ids(entity.name, _all_ids(entity, ctx))

    return fetch


def _all_ids(entity: Entity, ctx: SyncContext) -> set[Any]:
    """Every id Pipedrive lists for `entity` now, in id order (stable under concurrent updates)."""
    by_id = {"sort_by": "id", "sort_direction": "asc"} if entity.paging == CURSOR else {"sort": "id ASC"}
    ids: set[Any] = set()
    for listing in entity.listings:
        for page in ctx.pages(entity, listing, by_id, raw=True):
            ids.update(row.get(entity.primary_key) for row in page.items)
    ids.discard(None)
    return ids


def _updated_since_pages(
    entity: Entity, listing: Any, ctx: SyncContext, since: str | None
) -> Iterator[list[Row]]:
    # `updated_until` is exclusive and the Date header has whole seconds: include the run's own second.
    # Records changed later in that second come back next run (updated_since is the last loaded time).
    params = {
        "sort_by": "update_time",
        "sort_direction": "asc",
        "updated_until": rfc3339(ctx.run_started() + timedelta(seconds=1)),
    }
    if since:
        params["updated_since"] = rfc3339(since)
    for page in ctx.pages(entity, listing, params):
        if page.items:
            yield page.items


def _sorted_pages(entity: Entity, listing: Any, ctx: SyncContext, since: str | None) -> Iterator[list[Row]]:
    """Newest first; stop after the first page that reaches records older than the last loaded time."""
    field = entity.cursor_field
    for page in ctx.pages(entity, listing):
        if page.items:
            yield page.items
        times = [row.get(field) for row in page.items if row.get(field)]
        if since and times and min(times) < since:
            return


def _full_fetch(entity: Entity, ctx: SyncContext, interval_hours: float | None, force: bool = False) -> Any:
    def fetch() -> Iterator[list[Row]]:
        with ctx.timed(entity):
            state = dlt.current.resource_state()
            parents = _parents_digest(entity, ctx)
            if not force and not _full_read_due(state, ctx, interval_hours, parents):
                return  # read recently: no request, nothing loaded, no live ids noted
            rows = _per_parent_rows(entity, ctx) if entity.strategy == PER_PARENT else ctx.full_rows(entity)
            yield from _changed_only(entity, rows, ctx)
            if interval_hours is not None:
                state["last_full_read"] = ctx.run_started().isoformat()
                state["parents_digest"] = parents

    return fetch


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
    return _digest({"rows": ctx.full_rows(BY_NAME[entity.parent])})


def _per_parent_rows(entity: Entity, ctx: SyncContext) -> list[Row]:
    rows: list[Row] = []
    for parent in ctx.full_rows(BY_NAME[entity.parent]):
        if parent.get("id") is None:
            continue
        for listing in entity.listings:
            for page in ctx.pages(entity, listing, {entity.parent_param: parent["id"]}):
                rows.extend(page.items)
    return rows


def _changed_only(entity: Entity, rows: Iterable[Row], ctx: SyncContext) -> Iterator[list[Row]]:
    """Yield the records whose content changed since the last run; note every id as live.

    The digests live in the resource state, which dlt commits only with a successful load. Ids that vanished
    are flagged after the load by `deletions.flag_vanished` from the live ids noted here.
    """
    state = dlt.current.resource_state()
    previous: dict[str, str] = state.get("digests") or {}
    current: dict[str, str] = {}
    changed: list[Row] = []
    for row in rows:
        key = orjson.dumps(row.get(entity.primary_key)).decode()
        if key in current:
            continue  # listed twice (a deleted project is also among the archived ones): first listing wins
        current[key] = _digest(row)
        if previous.get(key) != current[key]:
            changed.append(row)
    if changed:
        yield changed
    state["digests"] = current
    ctx.monitor.record_live_ids(entity.name, {orjson.loads(key) for key in current})


def _digest(row: Row) -> str:
    return hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=10).hexdigest()


def _deal_batch_fetch(entity: Entity, ctx: SyncContext) -> Any:
    def fetch(deals: list[Row]) -> Iterator[list[Row]]:
        ids = _ids(deals)
        with ctx.timed(entity):
            for start in range(0, len(ids), DEAL_IDS_PER_REQUEST):
                chunk = ids[start : start + DEAL_IDS_PER_REQUEST]
                params = {"deal_ids": ",".join(str(i) for i in chunk)}
                rows: list[Row] = []
                for listing in entity.listings:
                    for page in ctx.pages(entity, listing, params):
                        rows.extend(page.items)
                yield rows + _placeholders(entity, chunk, rows)

    return fetch


def _per_record_fetch(entity: Entity, ctx: SyncContext) -> Any:
    def fetch(parents: list[Row]) -> Iterator[list[Row]]:
        with ctx.timed(entity):
            for parent_id in _ids(parents):
                rows: list[Row] = []
                for listing in entity.listings:
                    # a parent deleted meanwhile answers 404: it simply has no rows any more
                    for page in ctx.pages(entity, listing, path_params={"id": parent_id}, missing_ok=True):
                        rows.extend(page.items)
                for row in rows:
                    if entity.derive:
                        entity.derive(row, parent_id)
                yield rows + _placeholders(entity, [parent_id], rows)

    return fetch


def _placeholders(entity: Entity, parent_ids: Sequence[Any], rows: list[Row]) -> list[Row]:
    """Rows that only clear a parent's old children: merge on `merge_key` deletes the parent's rows in the
    destination, and `is_deleted` (a hard-delete column for these tables) keeps the placeholder out."""
    key = entity.merge_key
    if not key or not _destination_merges():
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


def _destination_merges() -> bool:
    """Filesystem without a table format appends instead of merging: placeholders would become rows."""
    try:
        caps = dlt.current.pipeline().destination.capabilities()
    except Exception:  # no active pipeline (e.g. iterating the source directly): nothing to clear
        return False
    return "delete-insert" in (caps.supported_merge_strategies or ())


def _ids(rows: Iterable[Row] | Row) -> list[Any]:
    if isinstance(rows, dict):
        rows = [rows]
    seen: dict[Any, None] = {}
    for row in rows:
        if row.get("id") is not None:
            seen.setdefault(row["id"], None)
    return list(seen)
