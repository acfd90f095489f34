"""After a load: flag rows whose ids Pipedrive no longer lists (deleted records that the API hides).

Pipedrive reveals deleted deals for 30 days (`status=deleted`), but most other deleted records simply vanish
from the lists. A run knows every live id of an entity when it read the whole list: always for the small
lists read in full, and for every entity with `pipedrive_source(reconcile=True)`. `flag_vanished` compares
those ids with the destination and sets `is_deleted = true` on the rows that are gone (or deletes them, with
`hard_delete`). SQL destinations are updated in place, so the last known content of a deleted record stays;
destinations that cannot update (filesystem) get a tombstone row `{id, is_deleted: true}` appended. The
current version of such a record in its history table (`history.py`) gets its `valid_to` then, as does a
version that a newer read of the same record replaced (a record read twice in one run).

It is idempotent: if it is interrupted, the next run's call flags whatever is still unflagged. A table's
statements are one transaction where the destination has them, so no row is left without its nested rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import dlt
from dlt.common.schema import Schema
from dlt.common.schema.typing import C_DLT_LOAD_ID
from dlt.destinations.job_client_impl import SqlJobClientBase
from dlt.destinations.sql_client import SqlClientBase

from .entities import BY_NAME, Entity
from .history import VALIDITY_COLUMNS, end_replaced_versions, history_table
from .run import SyncMonitor

CHUNK = 500  # ids per UPDATE statement


def flag_vanished(pipeline: dlt.Pipeline, monitor: SyncMonitor) -> dict[str, int]:
    """Flag (or delete) rows no longer in Pipedrive; returns the number of rows flagged per table. First
    ends the history versions a newer read of the same record replaced (`history.end_replaced_versions`)."""
    end_replaced_versions(pipeline)
    schema = pipeline.default_schema if pipeline.default_schema_name else None  # read once: dlt reloads it
    checks = {table: links for table, links in _links(monitor).items() if materialized(schema, table)}
    if not checks:
        return {}
    # one client and connection for every table's query and statements: a client each (dlt resolves the
    # destination's configuration and connects) cost 1.7-2.9 s for the 33 tables a reconcile of the small
    # demo flagged, 0.3-0.55 s with one
    with pipeline.destination_client() as client:
        if isinstance(client, SqlJobClientBase):
            gone = _vanished(client.sql_client, checks)
            return {
                table: _update_in_place(client, BY_NAME[table], ids, monitor.hard_delete)
                for table, ids in gone.items()
            }
    with pipeline.sql_client() as sql:  # no statements (filesystem): queries over its files, tombstones
        gone = _vanished(sql, checks, appended=True)
    if gone:  # one load for every table: a run each extracted, normalized and loaded again
        tombstones = [_tombstones(BY_NAME[table], ids) for table, ids in gone.items()]
        pipeline.run(tombstones, schema=pipeline.default_schema)
    return {table: len(ids) for table, ids in gone.items()}


def _vanished(
    client: SqlClientBase[Any], checks: dict[str, list[tuple[str, Collection[Any]]]], appended: bool = False
) -> dict[str, list[Any]]:
    """Per table with any, the keys of its rows whose columns hold an id no longer listed live (sorted);
    `appended`: the destination appends tombstones (see `_known`)."""
    out: dict[str, list[Any]] = {}
    for table, links in checks.items():
        key = BY_NAME[table].primary_key
        rows = _known(client, table, key, *(column for column, _ in links), appended=appended)
        lives = [live for _, live in links]
        gone = {row[0] for row in rows if any(v not in live for v, live in zip(row[1:], lives, strict=True))}
        if gone:
            out[table] = sorted(gone, key=str)
    return out


def _links(monitor: SyncMonitor) -> dict[str, list[tuple[str, Collection[Any]]]]:
    """Per table, the columns whose value must be a live id, each with the ids listed live."""
    out: dict[str, list[tuple[str, Collection[Any]]]] = {}
    for entity in BY_NAME.values():
        links = [(entity.primary_key, entity.name)]
        if entity.merge_key:  # child rows go with the parent (or a referenced record) they belong to
            links += [(entity.merge_key, entity.parent), *entity.references]
        known = [(column, monitor.live_ids[table]) for column, table in links if table in monitor.live_ids]
        if known:
            out[entity.name] = known
    return out


def materialized(schema: Schema | None, table: str) -> bool:
    """Whether `schema` has `table` with columns (loaded before)."""
    return bool(schema and table in schema.tables and schema.tables[table].get("columns"))


def _known(
    client: SqlClientBase[Any], table: str, key: str, *columns: str, appended: bool = False
) -> Sequence[Sequence[Any]]:
    """`key` and the other columns of the destination rows not flagged deleted yet. `appended`: a row
    flagged is a tombstone loaded after it (filesystem), and the rows it ends stay as they were: those
    are left out too (every later run flagged such a record again, a tombstone more each run); a record
    loaded again after its tombstone (restored in Pipedrive) is known again.

    Plain SQL on the destination's client: a query through dlt's dataset relations first modelled every
    column of the schema for each table, and `flag_vanished` took 0.9-1.2 s after a small sync's load
    (with nothing to flag) instead of 0.1 s."""
    names = ", ".join(f"r.{client.escape_column_name(column)}" for column in (key, *columns))
    flag = client.escape_column_name("is_deleted")
    name = client.make_qualified_table_name(table)
    query = f"SELECT {names} FROM {name} r WHERE r.{flag} IS NOT TRUE"
    if appended:
        load_id, by = client.escape_column_name(C_DLT_LOAD_ID), client.escape_column_name(key)
        query += (
            f" AND NOT EXISTS (SELECT 1 FROM {name} t WHERE t.{by} = r.{by} AND t.{flag}"
            f" AND t.{load_id} > r.{load_id})"
        )
    return client.execute_sql(query) or []


def _update_in_place(client: SqlJobClientBase, entity: Entity, ids: Sequence[Any], hard_delete: bool) -> int:
    """Flag the rows of `ids`, or delete them (`hard_delete`, and always a child's: it goes with its parent).
    Every statement for one table in one transaction where the destination has them: deleting a row's
    nested rows and then the row itself, a failure in between left the row without its nested rows.

    dlt leaves `supports_transactions` unset for most destinations (DuckDB, Postgres) and runs its own
    statements in a transaction where DDL can be: a destination with DDL transactions has DML ones too."""
    caps = client.capabilities
    atomic = bool(caps.supports_transactions or caps.supports_ddl_transactions)
    with client.sql_client.begin_transaction() if atomic else contextlib.nullcontext():
        _statements(client, entity, ids, hard_delete or bool(entity.merge_key))
    return len(ids)


def _statements(client: SqlJobClientBase, entity: Entity, ids: Sequence[Any], delete: bool) -> None:
    sql = client.sql_client
    table = sql.make_qualified_table_name(entity.name)
    key = sql.escape_column_name(entity.primary_key)
    flag = sql.escape_column_name("is_deleted")
    valid_to = sql.escape_column_name(VALIDITY_COLUMNS[1])
    nested = [name for name in client.schema.tables if name.startswith(f"{entity.name}__")]
    versions = history_table(entity.name)
    history = sql.make_qualified_table_name(versions) if materialized(client.schema, versions) else None
    ended = datetime.now(UTC)
    for chunk in _chunks(ids):
        marks = ", ".join(["%s"] * len(chunk))
        if delete:
            for child in nested:  # nested rows point at their root row through _dlt_root_id
                sql.execute_sql(
                    f"DELETE FROM {sql.make_qualified_table_name(child)} WHERE _dlt_root_id IN "
                    f"(SELECT _dlt_id FROM {table} WHERE {key} IN ({marks}))",
                    *chunk,
                )
            sql.execute_sql(f"DELETE FROM {table} WHERE {key} IN ({marks})", *chunk)
        else:
            sql.execute_sql(f"UPDATE {table} SET {flag} = TRUE WHERE {key} IN ({marks})", *chunk)
        if history:  # scd2 closes only versions a later sync replaces: a record gone has no later version
            sql.execute_sql(
                f"UPDATE {history} SET {valid_to} = %s WHERE {key} IN ({marks}) AND {valid_to} IS NULL",
                ended,
                *chunk,
            )


def _tombstones(entity: Entity, ids: Iterable[Any]) -> Any:
    rows = [{entity.primary_key: key, "is_deleted": True} for key in ids]
    return dlt.resource(rows, name=entity.name, primary_key=entity.primary_key, write_disposition="append")


def _chunks(ids: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]
