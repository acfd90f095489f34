"""Helpers for the connector tests: run a sync against the emulator, load ground truth, compare tables.

Ground truth is the emulator's `/_emulator/snapshot/<table>`, loaded through dlt with the same nesting into a
separate DuckDB file, so both sides are normalized by the same code; the comparison then runs row by row on
every column the truth has (nested child tables included, matched to their parent's primary key).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from custom_field_expectations import custom_definitions, flow_change, readable

from pipedrive_source import ENTITIES, FIELDS_TABLES, SyncMonitor, pipedrive_source
from pipedrive_source.deletions import flag_vanished
from pipedrive_source.destinations import duckdb as duckdb_destination
from pipedrive_source.entities import BY_NAME, SORTED, UPDATED_SINCE
from pipedrive_source.settings import DEFAULT_MAX_TABLE_NESTING, HIGHEST_BURST_LIMIT

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

DATASET = "pipedrive"
TRUTH_DATASET = "truth"
# The emulator at Pipedrive's highest burst limit, for tests that do not depend on the pacing: a sync of every
# entity of the tiny company (about 480 requests) then takes 2 s of requests instead of 10 at the default 100
HIGHEST_BURST: dict[str, Any] = {"burst_limit": HIGHEST_BURST_LIMIT}


@pytest.fixture(scope="module", name="emulator_settings")
def highest_burst() -> dict[str, Any]:
    """conftest's `emulator_settings` for a module that imports this: its `emulator` at `HIGHEST_BURST`."""
    return HIGHEST_BURST


DLT_COLUMNS = ("_dlt_id", "_dlt_load_id", "_dlt_parent_id", "_dlt_root_id", "_dlt_list_idx")


# destination settings an orchestrator cannot load into, with the pipeline script's line for each: its
# definitions or DAG file fail to load with it (`settings` as environment variables)
UNUSABLE_DESTINATIONS = [
    pytest.param(
        {"PIPEDRIVE__DESTINATION": "postgres"},
        "Missing settings DESTINATION__POSTGRES__CREDENTIALS__DATABASE, DESTINATION__POSTGRES__"
        "CREDENTIALS__PASSWORD, DESTINATION__POSTGRES__CREDENTIALS__USERNAME, DESTINATION__POSTGRES__"
        "CREDENTIALS__HOST: set them in the environment or in .dlt/secrets.toml (destination.postgres."
        "credentials.database); or all of them in one value, DESTINATION__POSTGRES__CREDENTIALS (a "
        "connection string for SQL databases).",
        id="missing_credentials",
    ),
    pytest.param(
        {"PIPEDRIVE__DESTINATION": "postgress"},
        "Unknown destination 'postgress': --destination (or the destination setting under [pipedrive]) "
        "takes a dlt destination such as duckdb, postgres, bigquery, snowflake, motherduck or filesystem.",
        id="unknown",
    ),
    pytest.param(
        {
            "PIPEDRIVE__COMPANIES": '["acme"]',
            "PIPEDRIVE_ACME__PIPEDRIVE__DESTINATION": "postgres",
            "DESTINATION__POSTGRES__CREDENTIALS": "postgresql://loader:s3cret-pw@db:port/crm",
        },
        "The setting DESTINATION__POSTGRES__CREDENTIALS is not a connection string such as "
        "postgresql://user:password@host:5432/database; or set its fields one by one (DESTINATION__"
        "POSTGRES__CREDENTIALS__<FIELD>, or under [destination.postgres.credentials] in .dlt/secrets.toml).",
        id="unreadable_credentials_of_a_company",
    ),
]
SECRET_OF_UNUSABLE = "s3cret"  # the password in one of them, shown nowhere


@dataclass
class SyncResult:
    pipeline: dlt.Pipeline
    monitor: SyncMonitor
    loaded: dict[str, int]  # rows loaded per table (normalize row counts, without dlt's own tables)
    flagged: dict[str, int]
    seconds: float
    emulator_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.monitor.client_stats.requests if self.monitor.client_stats else 0

    @property
    def tokens(self) -> int:
        return self.monitor.client_stats.tokens if self.monitor.client_stats else 0

    @property
    def rows(self) -> int:
        return sum(self.loaded.values())


def make_pipeline(workdir: Path, destination: Any = None, name: str = "pipedrive_test") -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name=name,
        destination=destination or duckdb_destination(str(workdir / "crm.duckdb")),
        dataset_name=DATASET,
        pipelines_dir=str(workdir / "pipelines"),
    )


def sync(
    emulator: Any,
    workdir: Path,
    *,
    pipeline: dlt.Pipeline | None = None,
    loader_file_format: str | None = "parquet",
    **source_options: Any,
) -> SyncResult:
    """One run of the connector against `emulator`, then the vanished-id flagging (as the script does)."""
    pipeline = pipeline or make_pipeline(workdir)
    monitor = SyncMonitor()
    options = {"api_token": emulator.api_token, "base_url": emulator.base_url, "backoff_base_s": 0.01}
    options.update(source_options)
    emulator.control.reset_stats()
    started = time.perf_counter()
    pipeline.run(pipedrive_source(monitor=monitor, **options), loader_file_format=loader_file_format)
    flagged = flag_vanished(pipeline, monitor)
    seconds = time.perf_counter() - started
    trace = pipeline.last_trace
    counts = dict(trace.last_normalize_info.row_counts) if trace.last_normalize_info else {}
    loaded = {k: v for k, v in counts.items() if not k.startswith("_dlt")}
    return SyncResult(pipeline, monitor, loaded, flagged, seconds, emulator.control.stats())


def connections_of_extract(
    emulator: Any, pipeline: dlt.Pipeline, loader_file_format: str | None = "parquet", **source_options: Any
) -> tuple[int, int]:
    """(opened, left open) of the destination connections that extracting one run opens (the run then loads
    as usual)."""
    options = {"api_token": emulator.api_token, "base_url": emulator.base_url, "backoff_base_s": 0.01}
    with counted_connections(pipeline) as counts:
        pipeline.extract(pipedrive_source(**options, **source_options), loader_file_format=loader_file_format)
    pipeline.normalize()
    pipeline.load()
    return counts.opened, counts.left_open


@dataclass
class ConnectionCounts:
    opened: int = 0
    closed: int = 0

    @property
    def left_open(self) -> int:
        return self.opened - self.closed


@contextlib.contextmanager
def counted_connections(pipeline: dlt.Pipeline) -> Iterator[ConnectionCounts]:
    """The destination connections opened and closed while inside: counted by wrapping the destination's
    own `open_connection` and `close_connection`, each still opening and closing a real connection (a
    connection that garbage collection ends is never counted closed)."""
    kind = type(pipeline.sql_client())
    counts = ConnectionCounts()

    def counting(name: str, attribute: str) -> Any:
        original = getattr(kind, name)

        def counted(self: Any) -> Any:
            setattr(counts, attribute, getattr(counts, attribute) + 1)
            return original(self)

        return counted

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kind, "open_connection", counting("open_connection", "opened"))
        patch.setattr(kind, "close_connection", counting("close_connection", "closed"))
        yield counts


# ---- ground truth ------------------------------------------------------------------------------------------


def load_truth(emulator: Any, workdir: Path, tables: list[str], named_only: bool = False) -> Path:
    """Load the emulator's snapshot of `tables` into `truth.duckdb` (replacing what was there).

    Custom values are put in their readable columns by `custom_field_expectations` (the documented rules,
    independent of the resolver), in the columns the synced `custom_fields` table names (`named_only`: the
    values of fields it does not name yet are left out); a change log's (deal_flow's) custom field changes
    get that column as `data__column_name` and option labels."""
    path = workdir / "ground_truth.duckdb"  # not truth.duckdb: catalog and dataset names must differ
    pipeline = dlt.pipeline(
        pipeline_name="truth",
        destination=dlt.destinations.duckdb(credentials=str(path)),
        dataset_name=TRUTH_DATASET,
        pipelines_dir=str(workdir / "truth_pipelines"),
    )
    resources = []
    for table in tables:
        entity = BY_NAME[table]
        rows = emulator.control.snapshot(table)
        defs = custom_definitions(emulator.control.snapshot, table)
        if defs:
            columns = custom_columns(workdir / "crm.duckdb", table)
            rows = [readable(row, defs, columns, named_only) for row in rows]
        if entity.derive:
            rows = [_derived(entity, row) for row in rows]
        if entity.changes_of:  # a change log names the changed custom field as its table does
            defs = custom_definitions(emulator.control.snapshot, entity.changes_of)
            columns = custom_columns(workdir / "crm.duckdb", entity.changes_of)
            for row in rows:
                if "field_key" in row["data"]:
                    row["data"].update(flow_change(row["data"], defs, columns))
        resources.append(
            dlt.resource(
                rows,
                name=table,
                write_disposition="replace",
                primary_key=entity.primary_key,
                columns=entity.columns,
            )
        )

    @dlt.source(name="truth", max_table_nesting=DEFAULT_MAX_TABLE_NESTING)
    def truth() -> list[Any]:
        return resources

    pipeline.run(truth(), loader_file_format="parquet", refresh="drop_sources")
    return path


def custom_columns(sync_db: Path, table: str) -> dict[str, str]:
    """{field hash: column} of `table` as the sync bound them (empty when nothing was resolved)."""
    with duckdb.connect(str(sync_db), read_only=True) as con:
        if "custom_fields" not in _tables(con, _catalog(con), DATASET):
            return {}
        rows = con.execute(
            f"SELECT field_code, column_name FROM {DATASET}.custom_fields WHERE entity = ?", [table]
        ).fetchall()
    return dict(rows)


def column_types_of(db: Path) -> dict[str, dict[str, str]]:
    """{table: {column: DuckDB type}} of the dataset in the DuckDB file `db`."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ?",
            [DATASET],
        ).fetchall()
    out: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        out.setdefault(table, {})[column] = data_type
    return out


def _derived(entity: Any, row: dict[str, Any]) -> dict[str, Any]:
    parent_key = entity.merge_key
    entity.derive(row, row.get(parent_key))
    return row


# ---- comparison --------------------------------------------------------------------------------------------


@dataclass
class Mismatch:
    table: str
    problems: list[str]


def assert_equal_to_truth(emulator: Any, workdir: Path, tables: list[str], hard_delete: bool = False) -> None:
    """Each of `tables` in the sync's database equals the emulator's truth (the first differences shown)."""
    truth = load_truth(emulator, workdir, tables)
    problems = {t: p for t in tables if (p := compare(workdir / "crm.duckdb", truth, t, hard_delete))}
    assert not problems, {t: p[:5] for t, p in problems.items()}


def compare(sync_db: Path, truth_db: Path, table: str, hard_delete: bool = False) -> list[str]:
    """Differences between the synced table and the truth, as readable lines (empty when equal).

    With `hard_delete`, records the truth shows as deleted must be absent instead of flagged."""
    entity = BY_NAME[table]
    with duckdb.connect(str(sync_db), read_only=True) as con:
        con.execute(f"ATTACH '{truth_db}' AS t (READ_ONLY)")
        truth_tables = _tables(con, "t", TRUTH_DATASET)
        if table not in truth_tables:
            return []  # nothing in Pipedrive: nothing to compare
        synced_tables = _tables(con, _catalog(con), DATASET)
        if table not in synced_tables:
            return [f"{table}: table missing in the sync"]
        problems = _compare_rows(con, table, entity.primary_key, hard_delete)
        gone = _deleted_keys(con, table, entity.primary_key) if hard_delete else set()
        for child in sorted(t for t in truth_tables if t.startswith(f"{table}__")):
            problems += _compare_children(con, table, child, entity.primary_key, child in synced_tables, gone)
    return problems


def _catalog(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT current_database()").fetchone()[0]


def _tables(con: duckdb.DuckDBPyConnection, catalog: str, schema: str) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ?",
        [catalog, schema],
    ).fetchall()
    return {r[0] for r in rows}


def _fetch(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _compare_rows(con: duckdb.DuckDBPyConnection, table: str, pk: str, hard_delete: bool) -> list[str]:
    synced = {row[pk]: row for row in _fetch(con, f"SELECT * FROM {DATASET}.{table}")}
    truth = {row[pk]: row for row in _fetch(con, f"SELECT * FROM t.{TRUTH_DATASET}.{table}")}
    return _row_problems(table, truth, synced, set(), hard_delete)


def _row_problems(
    table: str,
    truth: dict[Any, dict],
    synced: dict[Any, dict],
    tolerated: set[Any],
    hard_delete: bool,
    variants: bool = False,
) -> list[str]:
    """What differs between the synced rows and the truth's, by key; a synced row no longer in Pipedrive
    must be flagged `is_deleted` (gone, with `hard_delete`) unless its key is `tolerated`. With `variants`,
    a synced value in a variant column (a text in a number column) counts as its column's value too."""
    problems = []
    for key, want in truth.items():
        want = fold_variants(want)
        got = synced.get(key)
        if variants and got is not None:
            got = fold_variants(got)
        if hard_delete and want.get("is_deleted") is True:
            if got is not None:
                problems.append(f"{table}[{key}]: deleted in Pipedrive but still here (hard_delete)")
        elif got is None:
            problems.append(f"{table}[{key}]: missing")
        else:
            problems += _column_problems(table, key, want, got)
    for key, got in synced.items():
        if key in truth or key in tolerated:
            continue
        if hard_delete or got.get("is_deleted") is not True:
            problems.append(f"{table}[{key}]: not in Pipedrive any more but not flagged is_deleted")
    return problems


VARIANT = re.compile(r"(\w+)__v_[a-z]+")  # dlt's column for values of another type than the first's


def fold_variants(row: dict[str, Any]) -> dict[str, Any]:
    """A truth row with its variant columns' values back in their column: the truth loader infers types
    from the first value (a deal value 0 makes `value` bigint, the next 39594.61 lands in `value__v_double`),
    the sync types them from the spec."""
    out = dict(row)
    for column, value in row.items():
        found = VARIANT.fullmatch(column)
        if found and found[1] in row:
            del out[column]
            if value is not None:
                out[found[1]] = value
    return out


def _column_problems(table: str, key: Any, want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    problems = []
    for column, value in want.items():
        if column in DLT_COLUMNS:
            continue
        if column not in got:
            if value is not None:
                problems.append(f"{table}[{key}].{column}: column missing (want {value!r})")
        elif not same(got[column], value):
            problems.append(f"{table}[{key}].{column}: got {got[column]!r}, want {value!r}")
    return problems


def _deleted_keys(con: duckdb.DuckDBPyConnection, table: str, pk: str) -> set[Any]:
    columns = {r[0] for r in con.execute(f"DESCRIBE t.{TRUTH_DATASET}.{table}").fetchall()}
    if "is_deleted" not in columns:
        return set()
    return {
        r[0] for r in con.execute(f"SELECT {pk} FROM t.{TRUTH_DATASET}.{table} WHERE is_deleted").fetchall()
    }


def _compare_children(
    con: duckdb.DuckDBPyConnection, table: str, child: str, pk: str, present: bool, skip: set[Any]
) -> list[str]:
    def grouped(catalog_schema: str) -> dict[Any, list[dict[str, Any]]]:
        rows = _fetch(
            con,
            f"SELECT p.{pk} AS _pk, c.* FROM {catalog_schema}.{child} c JOIN {catalog_schema}.{table} p "
            f"ON c._dlt_parent_id = p._dlt_id ORDER BY p.{pk}, c._dlt_list_idx",
        )
        out: dict[Any, list[dict[str, Any]]] = {}
        for row in rows:
            key = row.pop("_pk")
            plain = {k: v for k, v in row.items() if k not in DLT_COLUMNS}
            out.setdefault(key, []).append(fold_variants(plain))
        return out

    want = grouped(f"t.{TRUTH_DATASET}")
    if not present:
        return [f"{child}: child table missing in the sync"] if want else []
    got = grouped(DATASET)
    problems = []
    for key, items in want.items():
        if key in skip:
            continue
        have = got.get(key, [])
        if len(have) != len(items) or not all(
            all(same(h.get(c), v) for c, v in w.items()) for h, w in zip(have, items, strict=False)
        ):
            problems.append(f"{child}[{key}]: got {have!r}, want {items!r}")
    return problems


def same(got: Any, want: Any) -> bool:
    """Equal after the representations a warehouse may choose (JSON text vs objects, Decimal vs float)."""
    got, want = _plain(got), _plain(want)
    if isinstance(got, float) or isinstance(want, float):
        try:
            got, want = float(got), float(want)
        except (TypeError, ValueError):
            return False
        return (math.isnan(got) and math.isnan(want)) or math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return got == want


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def merge_pair(emulator: Any, table: str, column: str, related: str) -> tuple[int, int]:
    """(the live record with the most live related records, the live record it is merged into)."""
    live = {r["id"] for r in emulator.control.snapshot(table) if not r.get("is_deleted")}
    counts: dict[int, int] = {}
    for rec in emulator.control.snapshot(related):
        if rec.get(column) in live and not rec.get("is_deleted"):
            counts[rec[column]] = counts.get(rec[column], 0) + 1
    gone = max(sorted(counts), key=lambda rid: counts[rid])
    return gone, min(live - {gone})


def synced_rows(pipeline: dlt.Pipeline, table: str) -> list[dict[str, Any]]:
    with pipeline.sql_client() as client, client.execute_query(f"SELECT * FROM {table}") as cursor:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def assert_history_is(emulator: Any, pipeline: dlt.Pipeline, tables: list[str]) -> None:
    """Each `<table>_history` against the emulator's records: one current version per record, Pipedrive's
    current one; no version twice; each version ends where the next begins."""
    for table in tables:
        truth = {r["id"]: utc(r["update_time"]) for r in emulator.control.snapshot(table)}
        by_id: dict[Any, list[dict[str, Any]]] = {}
        for row in synced_rows(pipeline, f"{table}_history"):
            by_id.setdefault(row["id"], []).append(row)
        assert set(by_id) == set(truth), table
        for key, history in by_id.items():
            # a version replaced by a later read of the same run ends where it begins, before that one
            history.sort(key=lambda v: (v["valid_from"], v["valid_to"] is None, v["valid_to"]))
            assert [v["update_time"] for v in history if v["valid_to"] is None] == [truth[key]], (table, key)
            assert len({v["update_time"] for v in history}) == len(history), (table, key)  # none twice
            assert all(a["valid_to"] == b["valid_from"] for a, b in pairwise(history)), (table, key)


def utc(text: str) -> datetime:
    """A timestamp as loaded: v1's "2021-04-16 18:40:43" is UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


ALL_TABLES = [e.name for e in ENTITIES]
DEFAULT_TABLES = [e.name for e in ENTITIES if not e.opt_in]


# ---- request budget of a run without changes -----------------------------------------------------------


def incremental_listings() -> dict[str, int]:
    """{list endpoint of an incremental entity: its listings} (deals list live and deleted on one path)."""
    paths: dict[str, int] = {}
    for entity in ENTITIES:
        if entity.strategy in (UPDATED_SINCE, SORTED):
            for listing in entity.listings:
                paths[listing.path] = paths.get(listing.path, 0) + 1
    return paths


def assert_no_change_budget(result: SyncResult) -> None:
    """Issue 3's budget: requests <= entity tables + fields endpoints (counted by the emulator); one request
    per listing of each incremental entity; none for children of unchanged parents."""
    entity_tables = [t for t in DEFAULT_TABLES if t not in FIELDS_TABLES]
    per_endpoint = result.emulator_stats["requests"]
    assert result.requests == result.emulator_stats["total_requests"]
    assert result.requests <= len(entity_tables) + len(FIELDS_TABLES), per_endpoint
    assert all(per_endpoint.get(path, 0) <= n for path, n in incremental_listings().items()), per_endpoint
    for child in ("/api/v2/deals/products", "/api/v2/deals/installments", "/api/v2/products/{id}/variations"):
        assert child not in per_endpoint


def refuse_a_changed_deal(emulator: Any, db: Path) -> None:
    """A load the destination refuses for good: deals.title in `db` becomes by hand an ENUM of the titles it
    holds (their values stay as they were), and a deal gets a title the ENUM lacks, so the next merge of
    deals fails in DuckDB with a Conversion Error, a job dlt does not retry. Undo with
    `ALTER TABLE pipedrive.deals ALTER title SET DATA TYPE VARCHAR`."""
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TYPE deal_title AS ENUM (SELECT DISTINCT title FROM pipedrive.deals WHERE title NOTNULL)"
        )
        con.execute("ALTER TABLE pipedrive.deals ALTER title SET DATA TYPE deal_title")
        (deal,) = con.execute("SELECT min(id) FROM pipedrive.deals").fetchone()
    title = {"op": "update", "table": "deals", "id": deal, "changes": {"title": "A title the ENUM lacks"}}
    emulator.control.mutate(ops=[title])
