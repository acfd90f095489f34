"""After a load: flag rows whose ids Pipedrive no longer lists (deleted records that the API hides).

Pipedrive reveals deleted deals for 30 days (`status=deleted`), but most other deleted records simply vanish
from the lists. A run knows every live id of an entity when it read the whole list: always for the small
lists read in full, and for every entity with `pipedrive_source(reconcile=True)`. `flag_vanished` compares
those ids with the destination and sets `is_deleted = true` on the rows that are gone (or deletes them, with
`hard_delete`). SQL destinations are updated in place, so the last known content of a deleted record stays;
destinations that cannot update (filesystem) get a tombstone row `{id, is_deleted: true}` appended.

It is idempotent: if it is interrupted, the next run's call flags whatever is still unflagged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dlt
from dlt.destinations.job_client_impl import SqlJobClientBase

from .entities import BY_NAME, Entity
from .run import SyncMonitor

CHUNK = 500  # ids per UPDATE statement


def flag_vanished(pipeline: dlt.Pipeline, monitor: SyncMonitor) -> dict[str, int]:
    """Flag (or delete) rows no longer in Pipedrive; returns the number of rows flagged per table."""
    flagged: dict[str, int] = {}
    for table, gone in _vanished(pipeline, monitor).items():
        if gone:
            flagged[table] = _apply(pipeline, BY_NAME[table], gone, monitor.hard_delete)
    return flagged


def _vanished(pipeline: dlt.Pipeline, monitor: SyncMonitor) -> dict[str, set[Any]]:
    out: dict[str, set[Any]] = {}
    for table, live in monitor.live_ids.items():
        if table in BY_NAME and _materialized(pipeline, table):
            entity = BY_NAME[table]
            out[table] = {key for key in _known(pipeline, table, entity.primary_key) if key not in live}
    for entity in BY_NAME.values():
        links = [(entity.merge_key, entity.parent), *entity.references] if entity.merge_key else []
        links = [(column, monitor.live_ids[table]) for column, table in links if table in monitor.live_ids]
        if links and _materialized(pipeline, entity.name):
            # child rows go with the parent (or a referenced record) they belong to
            rows = _known(pipeline, entity.name, entity.primary_key, *(column for column, _ in links))
            out[entity.name] = {
                row[0]
                for row in rows
                if any(value not in live for value, (_, live) in zip(row[1:], links, strict=True))
            }
    return out


def _materialized(pipeline: dlt.Pipeline, table: str) -> bool:
    schema = pipeline.default_schema if pipeline.default_schema_name else None
    return bool(schema and table in schema.tables and schema.tables[table].get("columns"))


def _known(pipeline: dlt.Pipeline, table: str, *columns: str) -> list[Any]:
    """Key columns of the destination rows not flagged deleted yet."""
    names = ", ".join(columns)
    rows = pipeline.dataset().query(f"SELECT {names} FROM {table} WHERE is_deleted IS NOT TRUE").fetchall()
    return [row[0] for row in rows] if len(columns) == 1 else [tuple(row) for row in rows]


def _apply(pipeline: dlt.Pipeline, entity: Entity, ids: set[Any], hard_delete: bool) -> int:
    with pipeline.destination_client() as client:
        if isinstance(client, SqlJobClientBase):
            return _update_in_place(
                client, entity, sorted(ids, key=str), hard_delete or bool(entity.merge_key)
            )
    pipeline.run(_tombstones(entity, ids), schema=pipeline.default_schema)
    return len(ids)


def _update_in_place(client: SqlJobClientBase, entity: Entity, ids: Sequence[Any], delete: bool) -> int:
    sql = client.sql_client
    table = sql.make_qualified_table_name(entity.name)
    key = sql.escape_column_name(entity.primary_key)
    flag = sql.escape_column_name("is_deleted")
    nested = [name for name in client.schema.tables if name.startswith(f"{entity.name}__")]
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
    return len(ids)


def _tombstones(entity: Entity, ids: Iterable[Any]) -> Any:
    rows = [{entity.primary_key: key, "is_deleted": True} for key in ids]
    return dlt.resource(rows, name=entity.name, primary_key=entity.primary_key, write_disposition="append")


def _chunks(ids: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]
