"""The DuckDB destination loads merge tables straight into destination tables holding no other load's rows
(`destinations.py`): the same tables as dlt's stock DuckDB destination (staging dataset, then merge), on a
first load, a load into filled tables (which goes through staging), a load resumed after a crash and a
load after a refresh emptied the tables."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pytest
from dlt.common.destination.exceptions import DestinationTransientException
from dlt.destinations.impl.duckdb.duck import DuckDbCopyJob
from dlt.pipeline.exceptions import PipelineStepFailed

from pipedrive_source import destinations
from pipedrive_source.destinations import duckdb as duckdb_destination

DATASET = "crm"
STAGING = f"{DATASET}_staging"
VARYING = ("load_id", "inserted_at", "created_at", "_dlt_load_id", "_dlt_id")  # differ between two runs
DIRECT = ("deals", "notes", "deal_items")  # tables our destination loads directly on a first load

# deals: id, version, is_deleted, name. Ids 2 and 3 repeat across the two files (the highest version wins),
# id 3's and id 4's winning rows are deleted
FIRST_DEALS = [
    [(1, 1, False, "one"), (2, 1, None, "two-old"), (3, 1, False, "three"), (4, 1, True, "four")],
    [(2, 3, False, "two"), (2, 2, False, "two-mid"), (3, 2, True, "three-gone"), (5, 1, None, "five")],
]
SECOND_DEALS = [
    [(1, 2, False, "one-new"), (5, 2, True, "five-gone"), (6, 1, False, "six")],
    [(6, 2, False, "six-new"), (6, 1, False, "six")],
]


def _deals(files: list[list[tuple]]) -> Any:
    @dlt.resource(
        name="deals",
        write_disposition="merge",
        primary_key="id",
        columns={
            "version": {"data_type": "bigint", "dedup_sort": "desc"},
            "is_deleted": {"data_type": "bool", "hard_delete": True},
        },
    )
    def deals() -> Iterator[list[dict]]:
        for rows in files:  # two files of one table (FILE_MAX_ITEMS)
            yield [dict(zip(("id", "version", "is_deleted", "name"), row, strict=True)) for row in rows]

    return deals


def _resources(deals: list[list[tuple]], round_: int) -> list[Any]:
    @dlt.resource(name="notes", write_disposition="merge", primary_key="id")
    def notes() -> Iterator[dict]:  # no dedup_sort: the duplicates are the same row (any of them may stay)
        for i in range(1, 4):  # with the repeat, 4 rows: one file, deduplicated by its copy job
            yield {"id": i, "text": f"note {i} round {round_}"}
        yield {"id": 2, "text": f"note 2 round {round_}"}

    @dlt.resource(name="deal_items", write_disposition="merge", primary_key="id", merge_key="deal_id")
    def deal_items() -> Iterator[dict]:  # like the connector's child tables: top-level, with a merge key
        # the first round has two items of deals 1 and 2, later rounds replace deal 2's with one
        for deal_id in (1, 2) if round_ == 1 else (2,):
            for n in range(2 if round_ == 1 else 1):
                yield {"id": deal_id * 10 + n, "deal_id": deal_id, "round": round_}

    @dlt.resource(name="orders", write_disposition="merge", primary_key="id")
    def orders() -> Iterator[dict]:  # a dlt nested table (orders__lines): staging, as in dlt
        yield {"id": 1, "lines": [{"sku": f"a{round_}"}, {"sku": "b"}]}

    @dlt.resource(name="plain", write_disposition="merge", primary_key="id")
    def plain() -> Iterator[pa.Table]:  # arrow without _dlt_load_id: staging, as in dlt
        yield pa.table({"id": [1, 2, 2], "round": [round_] * 3})

    return [_deals(deals), notes(), deal_items(), orders(), plain()]


def _pipelines(tmp_path: Path) -> tuple[dlt.Pipeline, dlt.Pipeline]:
    """A pipeline to our DuckDB destination and one to dlt's stock DuckDB destination."""
    destinations = {
        "ours": duckdb_destination(str(tmp_path / "ours.duckdb")),
        "stock": dlt.destinations.duckdb(str(tmp_path / "stock.duckdb")),
    }
    return tuple(  # type: ignore[return-value]
        dlt.pipeline(  # the same names: the same schema and state
            pipeline_name="crm",
            destination=destination,
            dataset_name=DATASET,
            pipelines_dir=str(tmp_path / name),
        )
        for name, destination in destinations.items()
    )


@pytest.fixture(autouse=True)
def _small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_WRITER__FILE_MAX_ITEMS", "4")  # deals come in two files


def _run(pipeline: dlt.Pipeline, resources: list[Any], **kwargs: Any) -> str:
    return pipeline.run(resources, loader_file_format="parquet", **kwargs).loads_ids[-1]


def _query(pipeline: dlt.Pipeline, sql: str, *args: Any) -> list[tuple]:
    with pipeline.sql_client() as client:
        return list(client.execute_sql(sql, *args))


def _tables(pipeline: dlt.Pipeline) -> dict[str, list[tuple]]:
    """Every data table's rows (without dlt's random row ids and the load ids), the loads and the state."""
    tables: dict[str, list[tuple]] = {}
    for (name,) in _query(pipeline, "SELECT table_name FROM duckdb_tables() WHERE schema_name = %s", DATASET):
        columns = _query(
            pipeline,
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = %s AND table_name = %s",
            DATASET,
            name,
        )
        kept = sorted(c for (c,) in columns if c not in VARYING)
        if not name.startswith("_dlt"):  # _dlt_parent_id, _dlt_root_id: random ids too
            kept = [c for c in kept if not c.startswith("_dlt")]
        rows = _query(pipeline, f"SELECT {', '.join(kept)} FROM {name}")
        tables[name] = sorted(rows, key=repr)
    return tables


def _staged_rows(pipeline: dlt.Pipeline, table: str) -> int:
    """Rows in `table`'s staging table (0 also if it does not exist)."""
    tables = _query(pipeline, "SELECT table_name FROM duckdb_tables() WHERE schema_name = %s", STAGING)
    return _query(pipeline, f"SELECT count(*) FROM {STAGING}.{table}")[0][0] if (table,) in tables else 0


def _staged_load_ids(pipeline: dlt.Pipeline, table: str) -> set[str]:
    """The load ids of the rows in `table`'s staging table (empty: never staged)."""
    if not _staged_rows(pipeline, table):
        return set()
    return {row[0] for row in _query(pipeline, f"SELECT DISTINCT _dlt_load_id FROM {STAGING}.{table}")}


def _assert_free_for_another_process(database: Path) -> None:
    """Another process (a query, the next run) can open `database` for writing: no connection is left open."""
    opened = subprocess.run(
        [sys.executable, "-c", "import duckdb, sys; duckdb.connect(sys.argv[1]).close()", str(database)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert opened.returncode == 0, opened.stderr[-500:]


def test_a_first_load_copies_into_the_tables_and_leaves_what_dlts_merge_leaves(tmp_path: Path) -> None:
    ours, stock = _pipelines(tmp_path)
    info = ours.run(_resources(FIRST_DEALS, 1), loader_file_format="parquet")
    _run(stock, _resources(FIRST_DEALS, 1))

    assert _tables(ours) == _tables(stock)
    files = [job.job_file_info for job in info.load_packages[0].jobs["completed_jobs"]]
    assert sorted(f.file_format for f in files if f.table_name == "deals") == ["parquet", "parquet", "sql"]
    for table in ("notes", "deal_items"):  # one file each: the copy job ran the dedup, no follow-up job
        assert [f.file_format for f in files if f.table_name == table] == ["parquet"], table
    _assert_free_for_another_process(tmp_path / "ours.duckdb")  # the connection held for the load is back
    assert [r[1] for r in _query(ours, "SELECT id, name FROM deals ORDER BY id")] == ["one", "two", "five"]
    assert _query(ours, "SELECT count(*) FROM notes")[0][0] == 3
    for table in DIRECT:
        assert _staged_rows(ours, table) == 0, table
    for table in ("orders", "orders__lines", "plain"):  # tables that need staging still get it
        assert _staged_rows(ours, table) > 0, table
        assert _staged_rows(stock, table) > 0, table


def test_a_load_into_filled_tables_merges_through_staging(tmp_path: Path) -> None:
    ours, stock = _pipelines(tmp_path)
    for pipeline in (ours, stock):
        _run(pipeline, _resources(FIRST_DEALS, 1))
    second = _run(ours, _resources(SECOND_DEALS, 2))
    _run(stock, _resources(SECOND_DEALS, 2))

    assert _tables(ours) == _tables(stock)
    for table in DIRECT:
        assert _staged_load_ids(ours, table) == {second}, table
    assert [r[1] for r in _query(ours, "SELECT id, name FROM deals ORDER BY id")] == [
        "one-new",
        "two",
        "six-new",
    ]


@pytest.mark.parametrize("new_process", [True, False])
def test_a_load_resumed_after_a_crash_leaves_the_same_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_process: bool
) -> None:
    """The first copy of deals commits, then the load dies: deals holds rows of the package, which is
    loaded again (that file too: dlt cannot know the copy committed), still straight into the table, by a
    new process (which asks the database again) or the same one."""
    ours, stock = _pipelines(tmp_path)
    _run(stock, _resources(FIRST_DEALS, 1))
    copy = DuckDbCopyJob.run
    crashed: list[str] = []

    def copy_then_die(job: DuckDbCopyJob) -> None:
        copy(job)
        if job.load_table_name == "deals" and not crashed:
            crashed.append(job.file_name())
            raise DestinationTransientException("killed after the copy committed")

    monkeypatch.setattr(DuckDbCopyJob, "run", copy_then_die)
    monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "1")  # the load stops at the first retry
    with pytest.raises(PipelineStepFailed):
        _run(ours, _resources(FIRST_DEALS, 1))
    assert crashed and _query(ours, "SELECT count(*) FROM deals")[0][0] > 0
    if new_process:
        destinations._PACKAGES.clear()

    ours.load()
    assert _tables(ours) == _tables(stock)
    for table in DIRECT:
        assert _staged_rows(ours, table) == 0, table


def test_a_failed_load_leaves_the_database_free_for_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load holds the database open for its package; a load that fails gives it back too (a scheduler's
    process may live on, and another process could not open the file while it is held)."""
    ours, _ = _pipelines(tmp_path)

    def die(job: DuckDbCopyJob) -> None:
        raise DestinationTransientException("the disk is full")

    monkeypatch.setattr(DuckDbCopyJob, "run", die)
    monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "1")
    with pytest.raises(PipelineStepFailed) as failed:
        _run(ours, _resources(FIRST_DEALS, 1))
    assert "the disk is full" in str(failed.value)
    _assert_free_for_another_process(tmp_path / "ours.duckdb")


def test_a_table_emptied_by_a_refresh_loads_directly(tmp_path: Path) -> None:
    ours, stock = _pipelines(tmp_path)
    for pipeline in (ours, stock):
        _run(pipeline, _resources(FIRST_DEALS, 1))
    second = _run(ours, _resources(SECOND_DEALS, 2))
    _run(stock, _resources(SECOND_DEALS, 2))
    for pipeline in (ours, stock):
        _run(pipeline, _resources(SECOND_DEALS, 3), refresh="drop_data")

    assert _tables(ours) == _tables(stock)
    for table in DIRECT:  # the staging tables hold the second load only
        assert _staged_load_ids(ours, table) == {second}, table
    assert _query(ours, "SELECT DISTINCT round FROM deal_items") == [(3,)]
