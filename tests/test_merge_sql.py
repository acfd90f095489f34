"""The DuckDB destination's merge (`merge_sql.py`, `destinations.py`): the rows dlt's own dedup keeps, without
its sort of the whole load, and tables too wide for the default memory limit still load."""

from __future__ import annotations

import itertools
import logging
import re
import threading
from pathlib import Path

import dlt
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dlt.destinations.sql_jobs import SqlMergeFollowupJob
from dlt.pipeline.exceptions import PipelineStepFailed

from pipedrive_source import destinations
from pipedrive_source.destinations import MEMORY_MB, ROW_GROUP_SIZE, _MemoryShares
from pipedrive_source.destinations import duckdb as duckdb_destination
from pipedrive_source.merge_sql import UniqueFirstMergeJob

STAGED = [  # id, part, version, is_deleted
    (1, "a", 1, None),
    (2, "a", 1, False),
    (2, "a", 3, False),  # id 2 twice: version 3 wins when sorted
    (2, "b", 2, None),
    (3, "a", 5, True),  # deleted: kept out by the condition
    (4, "a", 1, None),
    (4, "a", 2, True),  # the winning row of id 4 is deleted
    (5, "a", 7, False),
]


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute('CREATE TABLE staged ("id" BIGINT, "part" VARCHAR, "version" BIGINT, "is_deleted" BOOLEAN)')
    con.executemany("INSERT INTO staged VALUES (?, ?, ?, ?)", STAGED)
    return con


@pytest.mark.parametrize(
    "keys, condition",
    list(itertools.product([['"id"'], ['"id"', '"part"']], [None, '"is_deleted" IS DISTINCT FROM TRUE'])),
)
def test_the_merge_keeps_the_rows_dlts_dedup_keeps(
    con: duckdb.DuckDBPyConnection, keys: list[str], condition: str | None
) -> None:
    columns = ['"id"', '"part"', '"version"', '"is_deleted"']
    sort = ('"version"', "desc")

    def select(job: type[SqlMergeFollowupJob]) -> list[tuple]:
        sql = job.gen_select_from_dedup_sql("staged", keys, columns, sort, condition)
        return sorted(con.execute(sql).fetchall(), key=repr)

    ours, dlts = select(UniqueFirstMergeJob), select(SqlMergeFollowupJob)
    assert ours == dlts
    assert (2, "a", 3, False) in ours and (2, "a", 1, False) not in ours
    assert (4, "a", 1, None) not in ours  # the newest row of id 4 is the deleted one
    assert ((4, "a", 2, True) in ours) is (condition is None)


def test_without_a_sort_every_key_keeps_one_row(con: duckdb.DuckDBPyConnection) -> None:
    sql = UniqueFirstMergeJob.gen_select_from_dedup_sql("staged", ['"id"'], ['"id"', '"version"'])
    rows = con.execute(sql).fetchall()
    assert sorted(r[0] for r in rows) == [1, 2, 3, 4, 5]
    assert {r for r in rows if r[0] in (1, 3, 5)} == {(1, 1), (3, 5), (5, 7)}


def wide_pipeline(tmp_path: Path, connection: duckdb.DuckDBPyConnection | None = None) -> dlt.Pipeline:
    """Into crm.duckdb, or into the database of `connection` (a connection handed to the destination)."""
    return dlt.pipeline(
        pipeline_name="wide",
        destination=duckdb_destination(str(tmp_path / "crm.duckdb") if connection is None else connection),
        dataset_name="wide",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def destination_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the DuckDB destination logged (a job that ran out of memory and ran again alone)."""
    return [r.getMessage() for r in caplog.records if r.name == "pipedrive_source.destinations"]


def failed_attempts(tmp_path: Path) -> list[str]:
    """The load-job attempts dlt logged as failed (one file each), with the end of their error."""
    return [f"{p.name}: {p.read_text()[-300:]}" for p in (tmp_path / "pipelines").rglob(".exceptions/*")]


def merge_table(name: str, table: pa.Table) -> object:
    """A resource yielding `table` as merge table `name`, keyed by `id`."""

    @dlt.resource(name=name, write_disposition="merge", primary_key="id")
    def rows() -> object:
        yield table

    return rows()


def read_back(
    tmp_path: Path, table: pa.Table, name: str, connection: duckdb.DuckDBPyConnection | None = None
) -> pa.Table:
    """The columns of `table` as loaded into `name`, by id, read apart from the pipeline (sorting long
    strings needs more than the load's memory limit), or through `connection`."""
    query = f"SELECT {', '.join(table.column_names)} FROM wide.{name} ORDER BY id"
    if connection is not None:
        return connection.sql(query).to_arrow_table()
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        return con.execute(query).to_arrow_table()


def load_merge_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, table: pa.Table
) -> tuple[dlt.Pipeline, list[str]]:
    """`table` loaded as merge table `name` with no failed job attempt; the destination's log."""
    pipeline = wide_pipeline(tmp_path)
    with caplog.at_level(logging.INFO, logger="pipedrive_source.destinations"):
        pipeline.run(merge_table(name, table), loader_file_format="parquet")
    assert not failed_attempts(tmp_path)
    return pipeline, destination_log(caplog)


def test_a_table_wider_than_the_memory_limit_allows_loads_alone_with_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """400 columns x 20,000 rows: DuckDB needs a block per column to write it, about 100 MB, over its
    limit: the job runs out of memory, runs again with a raised limit, and the limit is back after it."""
    width, rows = 400, 20_000
    columns = {f"c{i}": pa.array([i] * rows) for i in range(width)}
    table = pa.table({"id": pa.array(range(rows), pa.int64()), **columns})
    pipeline, retries = load_merge_table(tmp_path, caplog, "wide", table)
    retried = rf"DuckDB ran out of its {MEMORY_MB} MB memory limit in load job (wide\.\w+\.0\.(\w+)) \(table "
    retried += r"wide\); running it again alone with 161 MB"  # its claim: 401 integer, 2 text columns
    matches = [re.fullmatch(retried, message) for message in retries]
    assert retries and all(matches), retries
    assert "parquet" in {m[2] for m in matches}, retries  # the copy itself, not only a follow-up job
    with pipeline.sql_client() as client:
        assert client.execute_sql("SELECT count(*), count(DISTINCT id) FROM wide")[0] == (rows, rows)
        assert client.execute_sql("SELECT sum(c399) FROM wide")[0][0] == 399 * rows
        limit = client.execute_sql("SELECT current_setting('memory_limit')")[0][0]
    default = duckdb.connect(config={"memory_limit": f"{MEMORY_MB}MB"})
    assert limit == default.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def test_two_wide_text_tables_load_without_a_job_failing(tmp_path: Path) -> None:
    """120 text columns x 30,000 rows, twice: a commit of one needs about 100 MB; two at once failed
    (`failed to pin block`), and dlt retried the job with an error in the log."""
    width, rows, chunk = 120, 30_000, 2_000

    def text_table(table: str) -> object:
        @dlt.resource(name=table, write_disposition="merge", primary_key="id")
        def pages() -> object:
            for start in range(0, rows, chunk):
                ids = pa.array(range(start, start + chunk), pa.int64())
                numbers = [pc.cast(pc.add(ids, i * 7919), pa.string()) for i in range(width)]
                texts = {f"c{i}": pc.binary_join_element_wise(n, f"f{i}", " ") for i, n in enumerate(numbers)}
                yield pa.table({"id": ids, **texts})

        return pages

    pipeline = wide_pipeline(tmp_path)
    pipeline.run([text_table("wide_a"), text_table("wide_b")], loader_file_format="parquet")
    assert not failed_attempts(tmp_path)
    with pipeline.sql_client() as client:
        for table in ("wide_a", "wide_b"):
            assert client.execute_sql(f"SELECT count(DISTINCT id) FROM {table}")[0][0] == rows


def long_texts(width: int, rows: int) -> pa.Table:
    """`rows` ids and `width` text columns of distinct strings of about 30 characters (custom fields filled
    with addresses or notes): far more memory per column for DuckDB than the short strings above."""
    ids = pa.array(range(rows), pa.int64())
    texts = {
        f"c{i}": pc.binary_join_element_wise(
            "value",
            pc.cast(pc.add(pc.multiply(ids, 1_000_003), i * 7_919 + 10**11), pa.string()),
            f"of column {i}",
            " ",
        )
        for i in range(width)
    }
    return pa.table({"id": ids, **texts})


def load_long_texts(tmp_path: Path, caplog: pytest.LogCaptureFixture, width: int, rows: int) -> list[str]:
    """Load `long_texts` as a merge table; assert every value arrived as it was; the destination's log."""
    table = long_texts(width, rows)
    _, retries = load_merge_table(tmp_path, caplog, "texts", table)
    assert read_back(tmp_path, table, "texts").equals(table)
    return retries


def test_a_commit_that_runs_out_of_memory_runs_again_alone_in_the_database_attached_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """50 text columns x 8,000 rows of long strings, loaded with six other tables: the follow-up job's commit
    runs out of DuckDB's memory, which DuckDB raises as a transaction error ("Failed to commit: could not
    allocate block"). dlt retried it five times in the same database, where DuckDB's copy of the table is
    broken (retried there with more memory, it wrote wrong values: a /tmp script), and every later run
    failed the same way. Now it runs again alone, with twice the limit, in the database detached and
    attached again once the other jobs are done, and every table arrives as it was."""
    texts = long_texts(50, 8_000)
    others = {f"other_{n}": long_texts(3, 20_000) for n in range(6)}
    pipeline = wide_pipeline(tmp_path)
    resources = [merge_table("texts", texts), *(merge_table(name, t) for name, t in others.items())]
    with caplog.at_level(logging.INFO, logger="pipedrive_source.destinations"):
        pipeline.run(resources, loader_file_format="parquet")
    assert not failed_attempts(tmp_path)
    retried = rf"DuckDB ran out of its {MEMORY_MB} MB memory limit committing load job texts\.\w+\.\d+\.sql"
    retried += (
        rf" \(table texts\); running it again alone with {2 * MEMORY_MB} MB, in the database attached again"
    )
    retries = destination_log(caplog)
    assert any(re.fullmatch(retried, message) for message in retries), retries
    for name, table in {"texts": texts, **others}.items():
        assert read_back(tmp_path, table, name).equals(table), name


def test_a_job_that_runs_out_of_its_raised_limit_runs_again_with_twice_as_much(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """85 text columns x 8,000 rows of long strings need more than their claim (77 MB): the limit doubles
    until the job loads, instead of the load failing after dlt's retries at the claim."""
    retries = load_long_texts(tmp_path, caplog, 85, 8_000)
    limits = [int(re.search(r"running it again alone with (\d+) MB", message)[1]) for message in retries]
    assert len(limits) >= 2 and limits[1] == 2 * limits[0], retries


def test_a_claim_larger_than_the_limit_runs_once_the_other_jobs_are_done() -> None:
    """Claims of 0.9, 0.4 and 1.3 MB given back in the order they were taken left 2e-16 MB claimed: a
    claim larger than the limit, which runs alone, then waited for ever, and every job after it."""
    shares = _MemoryShares()
    jobs = [shares.claim(mb, 30.0) for mb in (0.9, 0.4, 1.3)]
    for job in jobs:
        job.__enter__()
    for job in jobs:
        job.__exit__(None, None, None)
    entered = threading.Event()

    def wide_job() -> None:
        with shares.claim(46.0, 30.0):
            entered.set()

    threading.Thread(target=wide_job, daemon=True).start()
    assert entered.wait(timeout=10), "a job claiming more than the limit never started with nothing running"


def test_the_database_is_attached_again_every_few_mb_loaded_and_every_value_arrives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB keeps memory for every table written until the database is detached: it is attached again
    between jobs each time `REATTACH_MB` of files were loaded. Six tables copied, then one merged with a
    column more (staging dataset, merge): every value arrives."""
    monkeypatch.setattr(destinations, "REATTACH_MB", 0.05)  # about every file here
    tables = {f"t{n}": long_texts(3, 5_000) for n in range(6)}
    pipeline = wide_pipeline(tmp_path)
    with caplog.at_level(logging.INFO, logger="pipedrive_source.destinations"):
        pipeline.run([merge_table(name, t) for name, t in tables.items()], loader_file_format="parquet")
        tables["t0"] = long_texts(4, 5_000)
        pipeline.run(merge_table("t0", tables["t0"]), loader_file_format="parquet")
    assert not failed_attempts(tmp_path)
    log = destination_log(caplog)
    assert sum(m.startswith("DuckDB's database attached again after") for m in log) >= 6, log
    for name, table in tables.items():
        assert read_back(tmp_path, table, name).equals(table), name


def test_a_connection_handed_to_the_destination_is_never_attached_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database of a connection handed in stays as its owner opened it: no reattach (which would have
    detached it from under the owner), and the rows are there through the owner's connection."""
    monkeypatch.setattr(destinations, "REATTACH_MB", 0.0)  # after every file, for a file it attached
    connection = duckdb.connect(str(tmp_path / "own.duckdb"))
    table = long_texts(3, 1_000)
    wide_pipeline(tmp_path, connection).run(merge_table("texts", table), loader_file_format="parquet")
    assert not failed_attempts(tmp_path)
    assert read_back(tmp_path, table, "texts", connection).equals(table)


def test_a_commit_out_of_memory_in_a_handed_connection_fails_once_saying_to_raise_the_limit(
    tmp_path: Path,
) -> None:
    """A connection handed in is not attached again, so a commit that ran out of memory there cannot run
    again in a sound database: the job fails once, and the message says what to do."""
    connection = duckdb.connect(str(tmp_path / "own.duckdb"))
    pipeline = wide_pipeline(tmp_path, connection)
    with pytest.raises(PipelineStepFailed) as failed:
        pipeline.run(merge_table("texts", long_texts(50, 8_000)), loader_file_format="parquet")
    assert "in the database of a connection handed to this destination" in str(failed.value)
    assert "Raise the memory limit." in str(failed.value)
    assert len(failed_attempts(tmp_path)) == 1


def test_no_job_starts_between_a_job_running_out_of_memory_and_its_run_alone() -> None:
    """What DuckDB left after a failed commit is not to be used before the job that failed attached the
    database again, alone: a job waiting for its share starts only after that."""
    shares = _MemoryShares()
    order: list[str] = []

    def other_job() -> None:
        with shares.claim(1.0, 30.0):
            order.append("other job")

    with shares.claim(1.0, 30.0):  # the job that runs out of memory
        shares.run_alone_next()
        waiting = threading.Thread(target=other_job, daemon=True)
        waiting.start()
    with shares.claim(1.0, 30.0, alone=True):
        order.append("the job again, alone")
    waiting.join(timeout=10)
    assert order == ["the job again, alone", "other job"]


def test_tables_are_written_in_small_row_groups_to_an_ordinary_database_file(tmp_path: Path) -> None:
    """The destination attaches the file with DuckDB row groups of `ROW_GROUP_SIZE` rows (what a commit
    cannot spill is a row group per column); the file keeps the catalog name `duckdb.connect` gives it, and
    opens with DuckDB's defaults afterwards."""
    rows = 3 * ROW_GROUP_SIZE + 100

    @dlt.resource(name="deals", write_disposition="merge", primary_key="id")
    def deals() -> object:
        ids = pa.array(range(rows), pa.int64())
        yield pa.table({"id": ids, "title": pc.cast(ids, pa.string())})

    pipeline = wide_pipeline(tmp_path)
    pipeline.run(deals(), loader_file_format="parquet")
    with pipeline.sql_client() as client:
        catalog = client.execute_sql("SELECT current_database()")[0][0]
    con = duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True)
    storage = "SELECT row_group_id, max(count) FROM pragma_storage_info('wide.deals') WHERE column_id = 0"
    groups = con.execute(f"{storage} GROUP BY 1").fetchall()
    assert catalog == con.execute("SELECT current_database()").fetchone()[0] == "crm"
    assert con.execute("SELECT count(DISTINCT id) FROM wide.deals").fetchone()[0] == rows
    assert len(groups) == 4 and max(count for _, count in groups) == ROW_GROUP_SIZE


def test_merges_of_long_narrow_tables_run_within_the_memory_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Four tables of 300,000 rows and 3 text columns, then 2% of their rows again: each staged merge needs
    more than its columns claim (3 MB): claiming by columns, merges ran at once and ran out of memory."""
    rows, changed = 300_000, 6_000

    def narrow(name: str, start: int, count: int, version: int) -> object:
        @dlt.resource(name=name, write_disposition="merge", primary_key="id")
        def pages() -> object:
            for first in range(start, start + count, 10_000):
                numbers = range(first, min(first + 10_000, start + count))
                yield pa.table(
                    {
                        "id": [f"{name}-{i:08d}-{'x' * 24}" for i in numbers],
                        "parent": [f"p{i // 3:08d}-{'y' * 24}" for i in numbers],
                        "version": [version] * len(numbers),
                    }
                )

        return pages

    names = [f"narrow_{k}" for k in range(4)]
    pipeline = wide_pipeline(tmp_path)
    pipeline.run([narrow(n, 0, rows, 1) for n in names], loader_file_format="parquet")
    with caplog.at_level(logging.INFO, logger="pipedrive_source.destinations"):
        pipeline.run([narrow(n, rows // 2, changed, 2) for n in names], loader_file_format="parquet")
    assert not destination_log(caplog)
    assert not failed_attempts(tmp_path)
    with pipeline.sql_client() as client:
        for name in names:
            counts = client.execute_sql(f"SELECT count(*), count(DISTINCT id), sum(version) FROM {name}")
            assert counts[0] == (rows, rows, rows + changed)
