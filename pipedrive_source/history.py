"""Optional SCD2 history: `add_history(source, ["deals"], pipeline)` adds a `deals_history` table.

The history table is fed by the same records the `deals` resource loads in a run (a dlt transformer on the
resource), so it costs no API request. It uses dlt's `scd2` merge strategy with the entity's id as merge
key: a record that changed gets a new row, and only the previous version of *that* record is closed - records
absent from an incremental run stay current. Columns:
- `valid_from` / `valid_to`: when the sync that saw a version loaded it, and when a later sync saw a newer
  one (`valid_to` is NULL for the current version). Pipedrive's time of the change is the `update_time`.
- everything the entity table has (stage_id, status, value, ...), as the API returned it then.

So stage changes between syncs are recorded with their time of sync; several changes between two syncs
collapse into the last one (the opt-in `deal_flow` table has every change, at one request per changed deal).
A version a run reads twice (overlapping v1 offset pages, a window read again) is given to the history once
(the run keeps about 90 bytes per version it gave until it ends: 9 MB for a first sync of 100,000 deals).
A record read twice with different content (changed while the run read it) gets both versions; after the
load `end_replaced_versions` leaves the newer one current and ends the other where it began.
Records Pipedrive hides once deleted (anything but deals within 30 days) end their history without a
deletion row: the run that finds them gone (`deletions.flag_vanished`: every run for the lists read in full,
a reconcile for the others) sets `valid_to` of their current version. A history started on a list read in
full that was loaded before gets every record from its next full read (`source._full_fetch`); an incremental
one starts with the records that change from then on (the run warns) until a reconcile, whose listing of live
ids reads every record anyway, gives it every record (not with children of the entity selected: they would be
read for every record), or a full refresh of the entity does. Destinations without the scd2 strategy (plain
filesystem) are skipped with a notice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import dlt
from dlt.destinations.sql_client import SqlClientBase
from dlt.extract.source import DltSource

from .entities import BY_NAME, FULL, PER_PARENT
from .errors import ConfigError
from .output import child_layout, history_needs_a_refresh
from .record_digests import entry

log = logging.getLogger("pipedrive_source")

SUFFIX = "_history"
VALIDITY_COLUMNS = ["valid_from", "valid_to"]


def history_table(entity: str) -> str:
    return f"{entity}{SUFFIX}"


def historizable() -> list[str]:
    """Entities whose records are tables of their own (not rows of a parent): deals, persons, ..."""
    return [name for name, entity in BY_NAME.items() if entity.parent is None]


def not_loaded(source: DltSource, entities: Sequence[str]) -> list[str]:
    """The entities among `entities` that could have a history but that `source` does not load: a history
    records only the versions a run reads, so theirs would stay as it is."""
    return [name for name in entities if name in historizable() and name not in source.resources]


def check_history(entities: Sequence[str]) -> None:
    """Refuse a name that cannot have a history (a typo, a child table such as deal_products)."""
    unknown = sorted(set(entities) - set(historizable()))
    if unknown:
        raise ConfigError(
            f"No history for {', '.join(unknown)}. History works for: {', '.join(historizable())}."
        )


def add_history(
    source: DltSource,
    entities: Sequence[str],
    pipeline: dlt.Pipeline | None = None,
    *,
    refresh: bool | None = None,
    reconcile: bool = False,
) -> list[str]:
    """Add an SCD2 history table for each of `entities` that `source` loads; returns the tables added.
    `refresh` (whether the run starts the entities over; None: not known here, as the run's refresh is
    decided later) and `reconcile` (it lists every id) tell where a history started on an entity `pipeline`
    loaded before begins: see `_say_where_it_starts`."""
    check_history(entities)
    if pipeline is not None and not _supports_scd2(pipeline):
        log.warning(
            "history skipped: the %s destination has no scd2 merge strategy",
            pipeline.destination.destination_name,
        )
        return []
    added = []
    for name in entities:
        if name in source.resources:
            source.resources.add(_history_resource(source, name))
            added.append(history_table(name))
            if pipeline is not None and not refresh:
                _say_where_it_starts(pipeline, name, source, reconcile, refuse=refresh is False)
    return added


def keeps_history(entity: str) -> bool:
    """Whether the source being extracted gives `entity`'s records to its history table."""
    try:
        source = dlt.current.source()
    except Exception:  # not inside an extraction
        return False
    return history_table(entity) in source.selected_resources


def _say_where_it_starts(
    pipeline: dlt.Pipeline, name: str, source: DltSource, reconcile: bool, refuse: bool
) -> None:
    """A history started on an entity loaded before holds the records read from then on: every record for
    the lists read in full (their next full read gives each a version), only the changed ones for the
    incremental lists until a reconcile (without children of theirs selected) or a full refresh gives it
    every record. Said until the history has its first row, not by the run that gives it every record
    (the warning said "the next --reconcile gives it every record" to that very reconcile). One whose lists
    loaded as tables of their own is refused here (`refuse`: the run is known to be no refresh), before
    anything is read: the run warned, read, and was then refused by its first page
    (`output.history_needs_a_refresh`)."""
    from .deletions import materialized  # deletions depends on this module

    schema = pipeline.default_schema if pipeline.default_schema_name else None
    if refuse and schema is not None and child_layout(schema, name) == "arrow":
        raise history_needs_a_refresh(name)
    if BY_NAME[name].strategy in (FULL, PER_PARENT) or not materialized(schema, name):
        return
    if not materialized(schema, history_table(name)):
        children = [e.name for e in BY_NAME.values() if e.parent == name and e.name in source.resources]
        if reconcile and not children:
            return
        seeds = "" if children else "the next --reconcile gives it every record at no request more; "
        log.warning(
            f"{history_table(name)} starts with the {name} that change from now on ({name} loaded before "
            f"without history); {seeds}--full-refresh --entities {name} --history {name} gives it every "
            f"record, at the cost of reading {name} in full again"
        )


def end_replaced_versions(pipeline: dlt.Pipeline) -> dict[str, int]:
    """End each current version that a newer current version of the same record replaced; returns the
    versions ended per history table.

    dlt's scd2 inserts every staged row whose content its table lacks: a record read twice in one run with
    different content (a deal changed while its ascending read paged on is listed again further on, within
    the run's `updated_until`) got two current versions, and the older one was never closed. Run after each
    load (`deletions.flag_vanished`). Of a record's current versions the newest stays current: the latest
    sync's, and of one sync's the latest `update_time` (two contents within one second of Pipedrive's clock:
    either). The others end where the one kept begins: a version of an earlier sync where the sync that
    replaced it loaded, one read earlier in the same sync at its own `valid_from` (zero length: no sync
    ended with it; it stays for the change it shows). Idempotent over whole tables: what an interrupted
    run left, the next run ends."""
    from .deletions import materialized  # deletions depends on this module

    schema = pipeline.default_schema if pipeline.default_schema_name else None
    tables = [name for name in historizable() if materialized(schema, history_table(name))]
    if schema is None or not tables:
        return {}
    ended: dict[str, int] = {}
    with pipeline.sql_client() as client:
        for name in tables:
            timed = "update_time" in schema.tables[history_table(name)]["columns"]
            count = _end_replaced(client, name, timed)
            if count:
                ended[history_table(name)] = count
                log.info("%s: %d version(s) replaced by a newer read ended", history_table(name), count)
    return ended


def _end_replaced(client: SqlClientBase[Any], name: str, timed: bool) -> int:
    table = client.make_qualified_table_name(history_table(name))
    columns = (BY_NAME[name].primary_key, "_dlt_id", *VALIDITY_COLUMNS)
    key, row_id, valid_from, valid_to = (client.escape_column_name(column) for column in columns)
    updated = client.escape_column_name("update_time") if timed else "NULL"
    current = f"FROM {table} WHERE {valid_to} IS NULL"
    repeated = f"SELECT {key} {current} GROUP BY {key} HAVING COUNT(*) > 1"
    rows = client.execute_sql(
        f"SELECT {key}, {valid_from}, {updated}, {row_id} {current} AND {key} IN ({repeated})"
    )
    versions: dict[Any, list[tuple[Any, ...]]] = {}
    for record, *version in rows or []:
        versions.setdefault(record, []).append(tuple(version))
    end = f"UPDATE {table} SET {valid_to} = %s WHERE {key} = %s AND {row_id} = %s AND {valid_to} IS NULL"
    ended = 0
    for record, current_versions in versions.items():
        # (valid_from, update_time, _dlt_id); a NULL update_time sorts first and meets only NULLs
        order = sorted(current_versions, key=lambda v: (v[0], v[1] is not None, v[1], v[2]))
        newest_from, _, newest_id = order[-1]
        for _, _, replaced in order[:-1]:
            if replaced != newest_id:  # the same content twice cannot be told apart: both stay
                client.execute_sql(end, newest_from, record, replaced)
                ended += 1
    return ended


def _history_resource(source: DltSource, name: str) -> Any:
    entity = BY_NAME[name]
    parent = source.resources[name]
    given: set[int] = set()  # the versions this run gave the history: (key hash, digest) in one int

    def versions(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        out = []
        for row in rows:
            # dlt's version hash counts empty columns too: a custom field added in Pipedrive gives every
            # record an empty value, and the next full read (a relabelled option...) made a new, unchanged
            # version of every record. A value cleared still changes the hash (its key goes).
            version = {key: value for key, value in row.items() if value is not None}
            # dlt's scd2 inserts every staged row its table lacks, a row twice in one load twice: v1 offset
            # pages overlap (and a resumed window reads its last second again), so notes read in pages of
            # 5 had 60 current versions for 49 notes, each closed twice by its next change
            key_hash, packed = entry(version, entity.primary_key)
            mark = key_hash << 64 | packed
            if mark not in given:
                given.add(mark)
                out.append(version)
        yield out

    return dlt.transformer(
        versions,
        data_from=parent,
        name=history_table(name),
        write_disposition={
            "disposition": "merge",
            "strategy": "scd2",
            "validity_column_names": VALIDITY_COLUMNS,
        },
        merge_key=entity.primary_key,  # only records seen in this run can get a new version
        columns=_plain_columns(parent.columns),
    )


def _plain_columns(columns: Any) -> dict[str, Any]:
    """The entity's column types, without delete semantics: a deleted record is a version in history."""
    if not isinstance(columns, dict):
        return {}
    return {name: {k: v for k, v in hint.items() if k != "hard_delete"} for name, hint in columns.items()}


def _supports_scd2(pipeline: dlt.Pipeline) -> bool:
    return "scd2" in (pipeline.destination.capabilities().supported_merge_strategies or ())
