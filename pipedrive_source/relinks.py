"""Records that a merge of persons or organizations moved without stamping them, found by a reconcile.

Pipedrive's merge (v1 `PUT /persons/{id}/merge`, `PUT /organizations/{id}/merge`) points the records of the
one merged away (deals, activities and their participants, persons of an organization, leads, notes, files)
at the one kept. Its docs do not say that the moved records get a new update_time, so an incremental read
cannot count on seeing them, and nothing in the API lists which records moved. A reconcile lists every
record of these entities anyway (the live ids for the deletion check, `source._reconcile_listing`): there,
each listed record's links to persons and organizations are compared with the ones the destination holds,
and the records whose links differ are loaded. That costs no request; the destination's links are read once
per entity (one query) and held packed while the listing runs, 16 bytes a record (`DigestTable` of hashes).
Every entity of a reconcile queries through one destination connection (`DestinationLinks`): a connection
each cost 0.2-0.3 s per entity at scale small (opening the client and the database), more than most queries.

Only records older than the entity's cursor are compared: the incremental read of the same run read the
newer ones. Records the destination does not hold (older than `start_date`, or flagged deleted) are left
alone. Full-read lists (call logs, projects) need none of this: their digests see any changed record.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby
from typing import Any

import dlt
from dlt.common.schema import Schema
from dlt.destinations.sql_client import SqlClientBase

from .deletions import materialized
from .entities import Entity
from .loaded import merges
from .record_digests import DigestTable
from .relations import references
from .run import Row

MERGED = ("persons", "organizations")  # what Pipedrive merges
# links held in a list of the record (a child table in the destination): (list column, the item's id key)
NESTED: dict[str, tuple[str, str]] = {"activities": ("participants", "person_id")}
FETCH = 10_000  # destination rows per fetch
_BITS = 2**64 - 1  # a DigestTable's entries are unsigned 64-bit


def link_columns(table: str) -> tuple[str, ...]:
    """The columns of `table` holding the id of a person or organization (not its own id)."""
    return tuple(column for column, target in references(table) if target in MERGED and target != table)


def relinked(table: str) -> bool:
    """Whether a merge can move records of `table`."""
    return bool(link_columns(table)) or table in NESTED


class StoredLinks:
    """The links to persons and organizations that the destination holds for an entity's records."""

    def __init__(
        self, entity: Entity, since: str, columns: Sequence[str], nested: bool, links: DigestTable
    ) -> None:
        self.entity, self.since, self.columns, self.nested, self.links = entity, since, columns, nested, links
        self.field = entity.cursor_field or "update_time"

    @classmethod
    def read(cls, entity: Entity, since: str | None, links: DestinationLinks) -> StoredLinks | None:
        """The links stored for `entity` in the running pipeline's destination, queried through `links`;
        None where nothing is to compare: no links, no cursor (the run read every record), no table yet, a
        destination without merges (filesystem: it appends versions)."""
        if since is None or not relinked(entity.name):
            return None
        schema = links.schema()
        if schema is None or not materialized(schema, entity.name):
            return None
        known = schema.tables[entity.name]["columns"]
        columns = [column for column in link_columns(entity.name) if column in known]
        child = f"{entity.name}__{NESTED[entity.name][0]}" if entity.name in NESTED else None
        nested = child is not None and materialized(schema, child)
        with links.client() as client:
            rows = _stored(client, entity, columns, child if nested else None)
            links_of = DigestTable.of(_entry(key, value) for key, value in rows)
        return cls(entity, since, columns, nested, links_of)

    def moved(self, rows: Iterable[Row]) -> list[Row]:
        """The records (raw, as listed) older than the cursor whose links differ from the stored ones."""
        out: list[Row] = []
        for row in rows:
            moment = row.get(self.field)
            if not isinstance(moment, str) or moment >= self.since:
                continue
            key_hash, packed = _entry(row.get(self.entity.primary_key), self._links(row))
            stored = self.links.digest_of(key_hash)
            if stored is not None and stored != packed:
                out.append(row)
        return out

    def _links(self, row: Row) -> tuple[Any, ...]:
        values: list[Any] = [row.get(column) for column in self.columns]
        if self.nested:
            items = row.get(NESTED[self.entity.name][0])
            key = NESTED[self.entity.name][1]
            values.append(_ids(item.get(key) for item in items if isinstance(item, dict)) if items else ())
        return tuple(values)


class DestinationLinks:
    """What every entity a reconcile compares shares: the destination's schema and capabilities, looked up
    once (about 0.2 s each time: dlt resolves the destination's configuration and reloads the schema), and
    one connection, opened by the first query and closed once each of those entities is done (`release`),
    whether it queried or not (a read stopped, a refused table). The entities' resources run one at a time,
    but a lock keeps the connection to one user anyway."""

    def __init__(self, entities: Iterable[str]) -> None:
        self._waiting = {name for name in entities if relinked(name)}
        self._lock = threading.RLock()
        self._looked_up = False
        self._pipeline: dlt.Pipeline | None = None
        self._schema: Schema | None = None
        self._client: SqlClientBase[Any] | None = None

    def schema(self) -> Schema | None:
        """The running pipeline's schema as the run began (nothing loads while the entities are read); None
        where nothing is to compare: no pipeline (the source iterated directly), a destination without
        merges (filesystem: it appends versions)."""
        with self._lock:
            if not self._looked_up:
                self._looked_up = True
                try:
                    pipeline = dlt.current.pipeline()
                    compared = merges(pipeline.destination)
                except Exception:  # no pipeline or destination
                    return None
                if compared and pipeline.default_schema_name:
                    self._pipeline, self._schema = pipeline, pipeline.default_schema
            return self._schema

    @contextlib.contextmanager
    def client(self) -> Iterator[SqlClientBase[Any]]:
        """The connection (after `schema` found one to compare in)."""
        with self._lock:
            if self._client is None:
                assert self._pipeline is not None, "schema() first"
                client = self._pipeline.sql_client()
                client.open_connection()
                self._client = client
            yield self._client

    def release(self, entity: str) -> None:
        """`entity` queries no more: the connection closes with the last one."""
        with self._lock:
            self._waiting.discard(entity)
            if not self._waiting and self._client is not None:
                client, self._client = self._client, None
                client.close_connection()


def _entry(key: Any, links: tuple[Any, ...]) -> tuple[int, int]:
    """A record's entry: Python's hashes of its key and links, which only this run compares (a third of
    the time of a digest's, and 7 equals 7.0 as the destination may return it)."""
    try:
        return hash(key) & _BITS, hash(links) & _BITS
    except TypeError:  # a link the spec gives as an id but that came as an object: compared as its text
        return hash(key) & _BITS, hash(repr(links)) & _BITS


def _stored(
    client: SqlClientBase[Any], entity: Entity, columns: Sequence[str], child: str | None
) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """(key, link values) of every row not flagged deleted, the nested ids last (sorted) when `child`."""
    table = client.make_qualified_table_name(entity.name)
    key = client.escape_column_name(entity.primary_key)
    names = "".join(f", r.{client.escape_column_name(column)}" for column in columns)
    flag = client.escape_column_name("is_deleted")
    query = f"SELECT r.{key}{names} FROM {table} r WHERE r.{flag} IS NOT TRUE"
    if child is not None:  # a row per nested item (or one without), grouped by the record
        item = client.escape_column_name(NESTED[entity.name][1])
        query = (
            f"SELECT r.{key}{names}, c.{item} FROM {table} r LEFT JOIN "
            f"{client.make_qualified_table_name(child)} c ON c._dlt_parent_id = r._dlt_id "
            f"WHERE r.{flag} IS NOT TRUE ORDER BY r.{key}"
        )
    with client.execute_query(query) as cursor:
        rows = _fetched(cursor)
        if child is None:
            for row in rows:
                yield row[0], tuple(row[1:])
            return
        for record, group in groupby(rows, key=lambda row: row[0]):
            items = list(group)
            yield record, (*items[0][1:-1], _ids(row[-1] for row in items))


def _fetched(cursor: Any) -> Iterator[Sequence[Any]]:
    while rows := cursor.fetchmany(FETCH):
        yield from rows


def _ids(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(sorted({value for value in values if value is not None}, key=str))
