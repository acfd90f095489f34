"""What keeps a sync's memory flat, checked for behaviour (the figures themselves are `bench/memory.py`'s):
the DuckDB destination runs with its memory settings, Arrow tables handed on early, when the run holds
more than its limit, load exactly what a run handing them on at the end loads, and a response's body is
freed once its page is decoded; a load in a process that extracted nothing gets glibc's malloc settings too.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import duckdb
import httpx
import pyarrow.parquet as pq
import pytest
from connector_fixtures import assert_equal_to_truth, make_pipeline, sync
from dlt.extract.pipe import Pipe

from pipedrive_source import destinations, output, pipedrive_source, source
from pipedrive_source.client import PipedriveClient
from pipedrive_source.concurrency import Feed, FetchPool
from pipedrive_source.destinations import DUCKDB_SETTINGS, LOAD_JOBS, MEMORY_MB
from pipedrive_source.destinations import duckdb as duckdb_destination
from pipedrive_source.emulator import EmulatorHandle, run_emulator
from pipedrive_source.entities import BY_NAME
from pipedrive_source.fetching import EntityRead
from pipedrive_source.limiter import NoLimiter
from pipedrive_source.oauth import ApiTokenAuth
from pipedrive_source.run import SyncContext
from pipedrive_source.settings import HttpSettings

TABLES = ["deals", "persons", "organizations", "activities", "notes", "leads"]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with run_emulator(seed=5, scale="tiny") as handle:
        yield handle


def test_the_duckdb_destination_loads_with_its_memory_settings(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    destination = duckdb_destination(str(tmp_path / "crm.duckdb"))
    pipeline = make_pipeline(tmp_path, destination=destination)
    result = sync(emulator, tmp_path, pipeline=pipeline, entities=["users", "deals"])
    assert result.loaded.get("deals")
    assert destination.capabilities().max_parallel_load_jobs == LOAD_JOBS
    limit, threads = _duckdb_settings(pipeline, "memory_limit", "threads")
    assert limit == _as_duckdb_shows(f"{MEMORY_MB}MB")
    assert threads == DUCKDB_SETTINGS["threads"]


def _duckdb_settings(pipeline: Any, *names: str) -> list[Any]:
    with pipeline.sql_client() as client:
        return [client.execute_sql(f"SELECT current_setting('{name}')")[0][0] for name in names]


def _as_duckdb_shows(memory_limit: str) -> str:
    """A memory limit as DuckDB reports it (`100MB` -> `95.3 MiB`)."""
    with duckdb.connect(config={"memory_limit": memory_limit}) as con:
        return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def test_duckdb_settings_configured_for_dlt_reach_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's settings from dlt's configuration (`[destination.duckdb.credentials] global_config`, here
    its environment variable) apply, the connector's defaults fill in the rest, and a setting given to
    `duckdb()` by keyword wins over both. The defaults were set when the destination was made, and dlt then
    left a configured memory limit or thread count unused."""
    configured = '{"memory_limit": "100MB", "threads": 2}'
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS__GLOBAL_CONFIG", configured)
    names = ("memory_limit", "threads", "preserve_insertion_order")
    found = []
    for name, settings in (("configured", {}), ("keyword", {"threads": 3})):
        destination = duckdb_destination(str(tmp_path / f"{name}.duckdb"), **settings)
        pipeline = make_pipeline(tmp_path / name, destination=destination)
        pipeline.run([{"id": 1}, {"id": 2}], table_name="things")
        found.append(_duckdb_settings(pipeline, *names))
    limit = _as_duckdb_shows("100MB")
    assert found == [[limit, 2, False], [limit, 3, False]]


@pytest.mark.parametrize("held", [1, 64 * 1024])
def test_tables_handed_on_at_the_run_limit_load_every_row(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: int
) -> None:
    """With a run limit of one byte every page is handed on as it comes, across all entities at once; with
    64 KB the largest holder hands on, often at its next page rather than at another entity's."""
    monkeypatch.setattr(output, "HELD_BYTES", held)
    result = sync(emulator, tmp_path, entities=TABLES)
    assert result.loaded.get("deals__label_ids") or result.loaded.get("persons__emails")
    assert_equal_to_truth(emulator, tmp_path, TABLES)


def test_tables_in_several_extraction_files_load_every_row(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extraction starts a new file every `EXTRACT_FILE_ROWS` rows of a table (the Parquet writers'
    metadata then stays bounded); a table in several files loads the rows one file would. Here every 20
    rows, with pages of 10 handed on as they come."""
    pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url)
    assert dlt.config.get(source.EXTRACT_FILE_ROWS_KEY) == source.EXTRACT_FILE_ROWS
    monkeypatch.setenv("SOURCES__PIPEDRIVE__DATA_WRITER__FILE_MAX_ITEMS", "20")  # a user's setting wins
    monkeypatch.setattr(output, "HELD_BYTES", 1)
    sync(emulator, tmp_path, entities=TABLES, page_size=10)
    files = {t: len(list((tmp_path / "pipelines").rglob(f"{t}.*.parquet"))) for t in ("deals", "persons")}
    assert all(n >= 2 for n in files.values()), files
    assert_equal_to_truth(emulator, tmp_path, TABLES)


def test_pages_of_a_few_rows_are_handed_on_by_what_their_objects_take(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Product variations come a request per product, a few rows each: their buffers alone stayed under the
    limit while thousands of pages were held (about 1 KB of objects per column and page). Counted with
    their objects, 50 products' pages no longer fit 64 KB: several row groups, every row loaded."""
    monkeypatch.setattr(output, "FLUSH_BYTES", 64 * 1024)
    tables = ["products", "product_variations"]
    result = sync(emulator, tmp_path, entities=tables)
    assert result.loaded.get("product_variations")
    files = list((tmp_path / "pipelines").rglob("product_variations.*.parquet"))
    assert sum(pq.ParquetFile(f).metadata.num_row_groups for f in files) >= 3
    assert_equal_to_truth(emulator, tmp_path, tables)


def test_dlt_logs_each_configuration_lookup_once_per_run(emulator: EmulatorHandle, tmp_path: Path) -> None:
    """dlt logs every configuration lookup until the run ends, and each extraction file resolves its writer's
    configuration again: about 200 lookups per file, 29,000 in a small sync (5 MB kept through the load).
    The run's trace reports each resolved value once, the writer's settings among them."""
    result = sync(emulator, tmp_path, entities=TABLES)
    trace = result.pipeline.last_trace
    values = [
        (v.key, tuple(v.sections), v.value, v.default_value, v.config_type_name)
        for v in trace.resolved_config_values
    ]
    assert len(values) == len(set(values))
    assert ("file_max_items", ("sources", "pipedrive", "data_writer")) in {v[:2] for v in values}


def emulator_client(emulator: EmulatorHandle) -> PipedriveClient:
    return PipedriveClient(emulator.base_url, ApiTokenAuth(emulator.api_token), HttpSettings(), NoLimiter())


def test_a_response_and_its_body_are_freed_once_the_page_is_decoded(emulator: EmulatorHandle) -> None:
    """httpx's stream refers back to its response, a reference cycle: only a full garbage collection,
    which a long sync runs seldom, freed it. Every body read stayed in memory until then (40-50 MB at a
    time in a large sync). With the collector off, nothing of five pages read may be left."""
    client = emulator_client(emulator)
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            assert client.get("/api/v2/deals", {"limit": 100}, cost=10, label="deals")["data"]
        left = [thing for thing in gc.get_objects() if isinstance(thing, httpx.Response)]
    finally:
        gc.enable()
    assert left == []


class _Records(list):
    """A page of records that can be watched (a plain list cannot be referred to weakly)."""


def test_a_resource_waiting_for_its_next_page_holds_no_page_of_records(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resource asks for its next page once it handed the last one on, and yields to dlt while none is
    ready. Its last page of records (hundreds of dicts) stayed referenced by the resource's frame all that
    time: a page per waiting resource, many at once in a large sync (its extraction peaked 7 MB higher).
    Whenever one read runs, no read waiting for its next page may have a page of records alive."""
    pages: dict[int, list[weakref.ref[_Records]]] = {}  # a read's pages of records
    waiting: set[int] = set()  # reads whose last answer was "nothing ready"
    reading: list[tuple[int, int]] = []  # (thread, read) whose batch is being made records
    alive: list[int] = []
    records, batches = SyncContext.records, EntityRead.batches

    def watched_records(self: SyncContext, entity: Any, batch: Any, raw: bool = False) -> list[Any]:
        rows = _Records(records(self, entity, batch, raw))
        for thread, read in reading:
            if thread == threading.get_ident():
                pages.setdefault(read, []).append(weakref.ref(rows))
        return rows

    def watched_batches(self: EntityRead) -> Iterator[Any]:
        try:
            for batch in batches(self):
                alive.extend(sum(page() is not None for page in pages.get(r, [])) for r in waiting)
                waiting.discard(id(self))
                if batch is None:
                    waiting.add(id(self))
                reading[:] = [(threading.get_ident(), id(self))]
                yield batch
        finally:
            waiting.discard(id(self))
            pages.pop(id(self), None)

    monkeypatch.setattr(SyncContext, "records", watched_records)
    monkeypatch.setattr(EntityRead, "batches", watched_batches)
    result = sync(emulator, tmp_path, entities=TABLES, page_size=20)
    assert all(result.loaded.get(table) for table in TABLES)
    assert len(alive) > 10 and sum(alive) == 0


@contextlib.contextmanager
def variations_read(emulator: EmulatorHandle, capacity: int) -> Iterator[EntityRead]:
    """A read of product variations through a pool of its own and a feed of `capacity` pages."""
    pool = FetchPool(emulator_client(emulator), workers=4)
    try:
        yield EntityRead(BY_NAME["product_variations"], Feed(pool, capacity), 100)
    finally:
        pool.close()


def test_a_read_of_many_parents_starts_their_jobs_as_its_feed_has_room(emulator: EmulatorHandle) -> None:
    """A first sync reads the children of every parent: product variations one request per product, deal
    products one per 100 deals. Every parent's job started at once, its objects held until its turn came:
    about 5,000 jobs at scale large, memory that grew with the company. Jobs now start as the feed has room
    (at most its capacity running, and one waiting), and every parent's children still arrive."""
    products = [row["id"] for row in emulator.control.snapshot("products")]
    capacity, open_jobs, rows = 2, [], []
    with variations_read(emulator, capacity) as read:
        for batch in read.per_record(products).batches():
            open_jobs.append(sum(not job.complete for job in read.jobs))
            rows += batch.items if batch is not None else []
    assert read.complete and len(read.jobs) == len(products) > 3 * capacity
    expected = emulator.control.snapshot("product_variations")
    assert sorted(row["id"] for row in rows) == sorted(row["id"] for row in expected) != []
    assert max(open_jobs) <= capacity + 1


class _NotAnId:
    def __format__(self, spec: str) -> str:
        raise ValueError("not an id")


def test_a_job_that_fails_to_start_fails_the_read_that_supplies_it(emulator: EmulatorHandle) -> None:
    """Jobs supplied one at a time start in whichever thread finds the feed with room (a worker's, after a
    page): a job that cannot be made is the read's error, raised to its consumer, not lost in that thread."""
    products = [row["id"] for row in emulator.control.snapshot("products")][:6]
    with variations_read(emulator, 2) as read, pytest.raises(ValueError, match="not an id"):
        for _ in read.per_record([*products, _NotAnId()]).batches():
            pass
    assert not read.complete


def test_what_the_extraction_left_in_reference_cycles_is_freed_before_the_load(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlt's extract leaves its pipes (each with its resource's generator and what that holds) and more in
    reference cycles, freed only by a full collection, which a process runs seldom (at scale large a
    collection and a trim after the extraction took the process from 268-271 to 191-199 MB). With the
    automatic collection off, a collection when the first load job is made finds no pipe unreachable."""
    found: list[int] = []
    make_job = destinations._DuckDbClient.create_load_job

    def counting(self: destinations._DuckDbClient, *args: Any, **kwargs: Any) -> Any:
        if not found:
            gc.set_debug(gc.DEBUG_SAVEALL)  # what the collection finds stays in gc.garbage, to be counted
            gc.collect()
            gc.set_debug(0)
            found.append(sum(isinstance(thing, Pipe) for thing in gc.garbage))
            gc.garbage.clear()
        return make_job(self, *args, **kwargs)

    monkeypatch.setattr(destinations._DuckDbClient, "create_load_job", counting)
    gc.disable()
    try:
        result = sync(emulator, tmp_path, entities=TABLES)
    finally:
        gc.enable()
    assert result.loaded.get("deals")
    assert found == [0]


# In a process of its own (the test process's malloc settings are whatever earlier tests left): whether a
# block just freed and allocated again gets a mapping of its own, before and after a package loads. With
# glibc's default, freeing a mapped block raises the mmap threshold over its size, so the block comes back
# from the heap; the connector fixes the threshold under that size.
FRESH_LOAD = """
import ctypes, json, sys
import dlt
from pipedrive_source.destinations import duckdb

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def mapped_again(size=300_000):
    libc.free(libc.malloc(size))
    mappings = libc.mallinfo2().hblks
    block = libc.malloc(size)
    mapped = libc.mallinfo2().hblks > mappings
    libc.free(block)
    return mapped

pipeline = dlt.pipeline("fresh", destination=duckdb(sys.argv[1] + "/db.duckdb"), dataset_name="d",
                        pipelines_dir=sys.argv[1] + "/pipelines")
pipeline.extract([{"id": 1}, {"id": 2}], table_name="t")
pipeline.normalize()
before = mapped_again()
pipeline.load()
after = mapped_again()
with pipeline.sql_client() as client:
    (rows,) = client.execute_sql("SELECT count(*) FROM t")[0]
print(json.dumps({"before": before, "after": after, "rows": rows}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_a_load_in_a_process_that_extracted_nothing_runs_with_the_malloc_settings(tmp_path: Path) -> None:
    """A package a crash left loads in the next run's process before it extracts (or in a process that only
    loads): its load runs with the mmap threshold the extraction would have fixed (a large load alone
    peaked 10 MB higher on glibc's defaults: 234 against 224 MB)."""
    done = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"before": False, "after": True, "rows": 2}


# A sync in a process of its own (what DuckDB's library holds resident depends on what ran in the process),
# watching the drop of DuckDB's code as its extraction starts: the library's resident pages then, just after,
# and the rows the load (which runs DuckDB's code again) wrote.
DROPPED_CODE = """
import json, os, sys
import dlt
from pipedrive_source import output, pipedrive_source
from pipedrive_source.destinations import duckdb

def library_kb():
    path, total, mapping = os.path.realpath(sys.modules["_duckdb"].__file__), 0, False
    for line in open("/proc/self/smaps"):
        if line[:1] in "0123456789abcdef":
            mapping = line.rstrip().endswith(path)
        elif mapping and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total

seen, drop = [], output.drop_duckdb_code
def watched():
    before = library_kb()
    drop()
    seen.append([before, library_kb()])
output.drop_duckdb_code = watched

work, base_url = sys.argv[1:3]
pipeline = dlt.pipeline("dropped", destination=duckdb(work + "/db.duckdb"), dataset_name="d",
                        pipelines_dir=work + "/pipelines")
pipeline.run(pipedrive_source(base_url=base_url, entities=["deals"]))
with pipeline.sql_client() as client:
    (rows,) = client.execute_sql("SELECT count(*) FROM deals")[0]
print(json.dumps({"seen": seen, "rows": rows}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps")
def test_duckdb_code_run_before_the_extraction_leaves_the_process_until_the_load(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`pipeline.run` reads the destination's state before it extracts: about 26 MB of DuckDB's code stayed
    resident through a large extraction that runs none of it (its peak: 259 against 231 MB). As the
    extraction starts those pages leave the process, once; the load maps what it runs again and loads."""
    done = subprocess.run(
        [sys.executable, "-c", DROPPED_CODE, str(tmp_path), emulator.base_url],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "SOURCES__PIPEDRIVE__API_TOKEN": emulator.api_token},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    (before, after), *again = seen["seen"]  # again: after a query of the destination in the extraction
    assert before - after > 5_000, seen  # kB
    assert all(left < 5_000 for _, left in again), seen
    assert seen["rows"] == len(emulator.control.snapshot("deals")) > 0


needs_duckdb_jemalloc = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(sys.modules["_duckdb"].__file__), "duckdb_je_mallctl"),
    reason="DuckDB's library has no jemalloc of its own here",
)


def _duckdb_jemalloc(name: str, kind: Any = ctypes.c_size_t) -> Any:
    """A value of the jemalloc in DuckDB's library (its statistics as of now)."""
    mallctl = ctypes.CDLL(sys.modules["_duckdb"].__file__).duckdb_je_mallctl
    epoch, size = ctypes.c_uint64(1), ctypes.c_size_t(8)
    mallctl(b"epoch", ctypes.byref(epoch), ctypes.byref(size), ctypes.byref(epoch), size)
    value, size = kind(), ctypes.c_size_t(ctypes.sizeof(kind))
    assert mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) == 0
    return value.value


@needs_duckdb_jemalloc
def test_duckdb_gives_back_at_once_the_memory_a_load_frees(
    emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's allocator kept the pages its load jobs freed for a second before giving them back (its
    jemalloc's decay): a large sync's load peaked 5 MB higher, a small one's the same. While a package
    loads, hardly any stays; after the load DuckDB keeps them as it did (its own default)."""
    decay_before = _duckdb_jemalloc("arenas.dirty_decay_ms", ctypes.c_ssize_t)
    kept_after_jobs: list[int] = []
    write_out = destinations._write_out

    def watched(*args: Any) -> None:
        write_out(*args)
        kept_after_jobs.append(_duckdb_jemalloc("stats.arenas.4096.pdirty"))  # freed, kept resident

    monkeypatch.setattr(destinations, "_write_out", watched)
    result = sync(emulator, tmp_path, entities=TABLES)
    assert result.loaded.get("deals")
    # pages of 4 KiB; a job freeing on another thread as this one reads may hold a few (65 once in CI):
    # three in four reads find at most 64 (without the purge: 0-6,049, three in four above 600)
    assert len(kept_after_jobs) > 10, kept_after_jobs
    assert sorted(kept_after_jobs)[len(kept_after_jobs) * 3 // 4] <= 64, kept_after_jobs
    assert _duckdb_jemalloc("arenas.dirty_decay_ms", ctypes.c_ssize_t) == decay_before


KEEPS_CONFIGURED_DECAY = """
import ctypes, sys
import duckdb
from pipedrive_source.concurrency import purge_duckdb_at_once

mallctl = ctypes.CDLL(sys.modules["_duckdb"].__file__).duckdb_je_mallctl
duckdb.connect().execute("SELECT 1").fetchall()

def decay():
    value, size = ctypes.c_ssize_t(), ctypes.c_size_t(8)
    mallctl(b"arenas.dirty_decay_ms", ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0))
    return value.value

restore = purge_duckdb_at_once()
during = decay()
restore()
print(during, decay())
"""


@needs_duckdb_jemalloc
def test_a_load_keeps_the_allocator_settings_the_environment_gives_duckdb(tmp_path: Path) -> None:
    """`DUCKDB_JE_MALLOC_CONF` is the user's say on DuckDB's allocator: a load leaves it as configured."""
    done = subprocess.run(
        [sys.executable, "-c", KEEPS_CONFIGURED_DECAY],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "DUCKDB_JE_MALLOC_CONF": "dirty_decay_ms:500"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["500", "500"]


def test_a_duckdb_sync_does_not_load_the_postgres_driver(emulator: EmulatorHandle, tmp_path: Path) -> None:
    """psycopg2 and libpq took about 4 MB of every sync's memory once the Postgres destination's module was
    imported with the others: they come in only when a Postgres load starts (`postgres_copy.py`)."""
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent / "pipelines")!r})
import pipedrive_pipeline
from pipedrive_source import deployment
from pipedrive_source.postgres_load import postgres
from pipedrive_source.destinations import loader_file_format
assert loader_file_format(postgres("postgresql://u:p@127.0.0.1:1/db")) == "parquet"
code = pipedrive_pipeline.main(["--quiet", "--no-views", "--entities", "users",
    "--pipelines-dir", {str(tmp_path / "pipelines")!r}])
print(code, "psycopg2" in sys.modules)
"""
    env = {
        **os.environ,
        "SOURCES__PIPEDRIVE__API_TOKEN": emulator.api_token,
        "SOURCES__PIPEDRIVE__BASE_URL": emulator.base_url,
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "crm.duckdb"),
        "DLT_PROJECT_DIR": str(tmp_path),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout
