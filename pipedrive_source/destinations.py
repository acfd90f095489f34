"""The DuckDB destination as the pipeline script creates it: faster loads in bounded memory.

DuckDB runs inside the sync's process, so its memory is the sync's memory. `preserve_insertion_order =
false` lets it copy and merge without keeping row order (about 20% faster loads here; dlt's merge does not
depend on it). `memory_limit` caps its buffer pool (it spills to disk beyond that) and the allocator hands
freed memory back after each task past `allocator_flush_threshold`, so a sync's peak memory does not grow
with the size of the company. The limit is shared by the queries running at once, `LOAD_JOBS` jobs of one
DuckDB thread each (dlt would run 20).

What DuckDB cannot spill is the row group it is writing: a block (256 KiB) or more per column, and a
commit writes every column of the rows inserted at once, up to a row group of rows. So the database is
attached with row groups of `ROW_GROUP_SIZE` rows, a quarter of DuckDB's default (`ATTACH` takes the
option, `duckdb.connect` does not: `_AttachingPool`); the file stays an ordinary DuckDB database, opened
by anyone with the default. A load job claims `MB_PER_COLUMN` per column of its table (by type: text 0.9
MB, needed by 120 columns of distinct strings; 0.4 MB by 400 integer columns) from the memory limit
before it runs and waits while the jobs running hold too much of it (`_MemoryShares`): two wide tables are
written one after the other instead of failing (dlt retried such a job, logging the error, and gave up
after five tries); a claim larger than the limit runs alone.

The limit is `MEMORY_MB`, below the claims of the widest tables: the claims are sized for the worst strings a
column may hold, and Pipedrive's tables need far less (at scale large, deals, 74 columns, loads alone at 24 MB
and fails at 16 against a claim of 46 MB; persons, 57 columns, loads at 16). DuckDB fills whatever limit it
has with blocks it could evict, so a limit raised to the widest claim (47 MB at scale large) was memory the
load held: a large sync peaked 21 MB higher (small: 16 MB), for a load 1.4 s faster (bench/RESULTS.md, stop
28). A job that runs out of memory at the limit anyway (a table of hundreds of columns, or of long distinct
strings) rolled back: it runs again alone, with the limit raised to its claim (at least twice the limit) for
the time it runs, doubled again each time it still runs out, up to DuckDB's own default of 80% of the
machine's memory (`_run_or_retry_alone`), with a warning in the log each time. A commit that runs out of
memory (a transaction error to DuckDB) leaves DuckDB's copy of the table broken: the same rows committed again
in that database came out wrong (a /tmp script, DuckDB 2.0: 8,000 rows, 5,952 distinct values where all were
distinct). dlt retried such a job five times there, and the next run failed the same way. So from such a
failure on no job starts until the job that failed ran again: alone, once the running jobs and their
checkpoints are done, in the database detached and attached again (`_reattach`), with the limit raised as
above. DuckDB keeps a file attached while any connection has a transaction or an unread result in it ("Unique
file handle conflict" on `ATTACH`, after which every later job lost the catalog: a first version, whose
checkpoints ran outside the claims, in a large sync), so a checkpoint takes a claim (of nothing) too. A large
sync with DuckDB's default row groups, whose commits of deals, persons or organizations ran out at 28 MB 3-4
times, then loaded every table with the values of a sync that never ran out. A SQL job claims at least
`SQL_CLAIM_MB`. With row groups of DuckDB's default size the same tables needed 0.9 MB per column whatever
their type (67 MB for deals), and every large table being loaded filled the limit: a large sync's load peaked
116 MB over its start against 95 MB with these row groups (62 against 60 MB at small; load only, 3 runs each).
The merge deduplicates staged rows only where keys repeat (`merge_sql.py`).

A first sync loads merge tables straight into their destination tables. dlt copies every file of a merge
table into the staging dataset and then inserts the staged rows into the destination table: the same rows
written twice, about half of a first sync's load time (155 MB of parquet, 77 tables: 15.3 s of DuckDB
work with staging, 8.0 s without). When the destination table holds no row of another load (it is new,
emptied by a refresh, or holds only rows this package copied before a crash), there is nothing to merge
with: the files go into it directly and `EmptyTableMergeJob` then leaves what the merge would have
inserted (deduplicated, without hard deleted rows). The answer cannot change while the package loads
(only the package writes to the table, and a staged table's merge, which may delete the other loads'
rows, runs after its copies), so the database is asked once per table and package (dlt asks again for
each job, `_PACKAGES`) and a process resuming the package after a crash gets the same answer. Tables with
nested tables (the connector's child tables are top-level tables), other merge strategies, dlt's merge
conditions, or without `_dlt_load_id`, and every table of an incremental sync, take dlt's staging and merge.
A table loaded directly from one file of the package (most tables: the extraction starts a new file only
every `source.EXTRACT_FILE_ROWS` rows of a table) gets the dedup of `EmptyTableMergeJob` in its copy job,
right after the copy, instead of a follow-up job: dlt's coordination of a job costs more than the job itself
at small tables (a small sync's load: 1.5 s with 77 follow-up jobs, 1.0 s without them). A table in several
files keeps the follow-up job, which runs once all of them are in.

dlt opens the database when a job borrows a connection while none is borrowed and closes it (writing a
checkpoint) when the last one is returned: between jobs, 16 times in a small sync's load, under the lock
every job takes to borrow. So the load of a package holds one connection from the start of the package to
its `complete_load`, or until a job fails (`_HELD`): the database is opened once. Closing it was also what
wrote the loaded rows to the database file (dlt sets `checkpoint_threshold` to 1 GB): until then DuckDB
keeps them in memory, and past its memory limit in a temporary file, read back when it checkpoints. So each
job ends with a `CHECKPOINT`, which DuckDB refuses while another job writes (a later job's or the final
close then writes those rows): a large sync's load 5.8-6.1 s against 6.9 s without it, and 240-251 MB
against 253 MB. DuckDB also keeps about 3 KB per column and row group of every table written until the
database is detached, so each time jobs loaded `REATTACH_MB` of files it is detached and attached again
between jobs (`_reattach`, with no job running): what DuckDB keeps of them stops growing with the company.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
from dlt.common.data_writers.escape import escape_duckdb_literal, escape_postgres_identifier
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.common.destination.reference import Destination, DestinationReference
from dlt.common.destination.utils import resolve_merge_strategy
from dlt.common.schema.typing import C_DLT_LOAD_ID
from dlt.common.schema.utils import get_nested_tables
from dlt.common.storages.exceptions import CurrentLoadPackageStateNotAvailable
from dlt.common.storages.load_package import ParsedLoadJobFileName, load_package_state
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.destinations.impl.duckdb.configuration import DuckDbConnectionPool, DuckDbCredentials
from dlt.destinations.impl.duckdb.duck import DuckDbClient
from duckdb import DuckDBPyConnection, OutOfMemoryException, TransactionException
from duckdb import Error as DuckDBError
from duckdb import connect as duckdb_connect

from .concurrency import bound_malloc, purge_duckdb_at_once, release_memory
from .errors import causes
from .merge_sql import EmptyTableMergeJob, UniqueFirstMergeJob
from .postgres_load import is_exact_postgres

logger = logging.getLogger(__name__)

MEMORY_MB = 28  # DuckDB's memory limit while it loads (module docstring)
ROW_GROUP_SIZE = 30_720  # rows of a DuckDB row group (its default: 122,880), see the module docstring
DUCKDB_SETTINGS: dict[str, Any] = {
    "preserve_insertion_order": False,
    "memory_limit": f"{MEMORY_MB}MB",
    "threads": 1,
    "allocator_flush_threshold": "8MB",
}
# DuckDB's unspillable memory per column of a table being written (see above): a text column's strings
# need more than the fixed-width values of other types
MB_PER_COLUMN = {"text": 0.9, "json": 0.9, "binary": 0.9}
MB_PER_OTHER_COLUMN = 0.4
# a SQL job (a merge, a dedup) groups and joins whole tables by key: its memory follows their rows, not their
# columns. Alone, the staged merges of persons__phones and leads__label_ids at scale large (137,000 rows, 9
# columns: a claim of 5 MB) need 14-20 MB; claiming their columns only, several ran at once and ran out. Not
# the dedup a copy job runs after a first sync's copy: none ran out, and claiming 20 MB there made a small
# sync's load one job at a time (3.1 against 1.9 s)
SQL_CLAIM_MB = 20.0
# load jobs DuckDB runs at once (see the module docstring). Each job holds DuckDB's chunks of the rows it
# moves besides the buffer pool the limit caps (vectors of 2,048 values: 32 KiB allocations held 5.6 MB at a
# large load's peak, 1.6 MB at a small one's): with 2 jobs a large sync peaked at 245.4 against 249.6 MB
# with 4, its load 7.6 against 7.8 s, and a small one's load took 1.6 s either way (bench/side_by_side.py,
# 3 and 5 runs, stop 33; before the claims and direct copies of stops 24-31 a small load took 3.95 s with 2
# against 3.0 s with 4)
LOAD_JOBS = 2
# DuckDB keeps about 3 KB per column and row group of every table written until the database is detached:
# memory that grows with the company (a few MB at scale large, twice that at twice large). So the database
# is attached again each time jobs loaded this much: a large sync peaked 3-6 MB lower, one twice as large 10
# MB lower (267.7 against 277.8 MB), for a load 4% longer there; a small sync's files (8 MB) never reach it
REATTACH_MB = 20.0


def duckdb(path: str | DuckDBPyConnection, **settings: Any) -> Any:
    """A dlt DuckDB destination writing to `path` (a database file, or a connection its owner keeps open),
    with DuckDB's settings given here by keyword, else those of dlt's configuration
    (`[destination.duckdb.credentials] global_config`), else `DUCKDB_SETTINGS`."""
    destination = _DuckDb(credentials=DuckDbCredentials(path), max_parallel_load_jobs=LOAD_JOBS)
    destination.settings = dict(settings)
    return destination


def table_claim_mb(table: Any, sql: bool = False) -> float:
    """The memory a load job of `table` claims from DuckDB's limit (module docstring); `sql`: a SQL job's."""
    columns = (table.get("columns") or {}).values()
    claim = sum(MB_PER_COLUMN.get(c.get("data_type"), MB_PER_OTHER_COLUMN) for c in columns)
    return max(claim, SQL_CLAIM_MB) if sql else claim


class _MemoryShares:
    """The share of a DuckDB database's memory limit its running load jobs claim (module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._claimed = 0.0
        self._running = 0
        self._alone_next = 0  # jobs that ran out of memory, to run alone before any other job starts
        self._loaded_mb = 0.0  # files loaded since the database was attached

    @contextlib.contextmanager
    def claim(self, mb: float, limit_mb: float, alone: bool = False) -> Iterator[None]:
        """`mb` of `limit_mb`; `alone`: once no other job runs, before any job waiting (`run_alone_next`)."""
        with self._cond:  # a claim larger than the limit runs alone rather than never
            if alone:
                self._cond.wait_for(lambda: self._running == 0)
                self._alone_next -= 1
                mb = math.inf
            else:
                self._cond.wait_for(lambda: not self._alone_next and self._fits(mb, limit_mb))
            self._claimed += mb
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                # claims of 0.9, 0.4 and 1.3 taken and given back leave 2e-16, not 0: a claim larger than
                # the limit then waited for ever for "nothing claimed" (a load hung with every job waiting)
                self._claimed = self._claimed - mb if self._running else 0.0
                self._cond.notify_all()

    def _fits(self, mb: float, limit_mb: float) -> bool:
        return self._running == 0 or self._claimed + mb <= limit_mb

    def loaded(self, mb: float) -> bool:
        """Count a job's file: True once `REATTACH_MB` were loaded since the database was attached, and no
        job starts from then until the caller ran `alone` (to attach it again)."""
        with self._cond:
            self._loaded_mb += mb
            if self._loaded_mb < REATTACH_MB:
                return False
            self._loaded_mb = 0.0
        self.run_alone_next()
        return True

    def run_alone_next(self) -> None:
        """No job starts from now until the caller ran `alone`: a job that ran out of memory (after a failed
        commit, DuckDB's state is not to be used before `_reattach`), or one attaching the database again."""
        with self._cond:
            self._alone_next += 1


_SHARES: dict[str, _MemoryShares] = {}  # by database file


# DuckDB's buffer manager at its limit, in the message of the error a commit raises
_BUFFER_FULL = re.compile(r"(could not allocate|failed to pin) block of size")
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?)I?B?\s*$", re.IGNORECASE)
_UNIT_MB = {"": 1e-6, "K": 1e-3, "M": 1, "G": 1e3, "T": 1e6}


def _size_mb(value: Any) -> float | None:
    match = _SIZE.match(str(value))
    return float(match[1]) * _UNIT_MB[match[2].upper()] if match else None


@dataclass
class _Package:
    """What the load of one package found out, kept for every job client of the load."""

    load_id: str
    direct: dict[str, bool] = field(default_factory=dict)  # qualified table -> `_loads_directly`
    files: Counter[str] | None = None  # data files of each table in the package (counted by its first job)


# The package loading in each database. The answers cannot change while a package loads (module docstring),
# and dlt asks them of a new client for each job: asking DuckDB each time opened and closed the database when
# no job held it (6 s of a 16 s load, 77 tables)
_PACKAGES: dict[str, _Package] = {}
_HELD = "_pipedrive_held"  # attribute of dlt's connection pool: the connection held for a package's load
_JOB_FOLDERS = ("new_jobs", "started_jobs", "completed_jobs", "failed_jobs")


class _AttachingPool(DuckDbConnectionPool):
    """dlt's pool, opening the database file by `ATTACH` with `ROW_GROUP_SIZE` (not a connect option)."""

    _catalog = ""

    def borrow_conn(self, *args: Any, **kwargs: Any) -> DuckDBPyConnection:
        with self._conn_lock:
            if self._conn is None and self._conn_owner and not self.always_open_connection:
                self._conn, self._catalog = _attach(self.credentials)
        return super().borrow_conn(*args, **kwargs)

    def _apply_local_config(self, conn: DuckDBPyConnection, *args: Any, **kwargs: Any) -> None:
        # a cursor starts in the instance's default database (the in-memory one), before `search_path`
        if self._catalog:
            conn.execute(f"USE {escape_postgres_identifier(self._catalog)}")
        super()._apply_local_config(conn, *args, **kwargs)


def _attach(credentials: Any) -> tuple[DuckDBPyConnection, str]:
    """A connection to the database file of `credentials` as `duckdb.connect(path)` would open it (same
    catalog name and temporary directory), with DuckDB row groups of `ROW_GROUP_SIZE` rows; the catalog."""
    path = str(credentials._conn_str())
    conn = duckdb_connect(":memory:", config={"temp_directory": f"{path}.tmp"})
    try:
        conn.execute(f"ATTACH {escape_duckdb_literal(path)} ({_attach_options(credentials)})")
        query = "SELECT database_name FROM duckdb_databases() WHERE path IS NOT NULL"
        (catalog,) = conn.execute(query).fetchone()
        conn.execute(f"USE {escape_postgres_identifier(catalog)}")  # dlt's DuckDB identifier quoting
    except Exception:
        conn.close()
        raise
    return conn, catalog


def _attach_options(credentials: Any) -> str:
    return f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}" + (", READ_ONLY" if credentials.read_only else "")


def _reattachable(job: Any) -> bool:
    """Whether `job`'s database is a file this destination attached (a connection handed in is its
    owner's to keep as it is)."""
    return bool(job._job_client.config.credentials.conn_pool._catalog)


def _reattach(job: Any) -> None:
    """Detach the database file and attach it again, from `job`'s connection, while no other job runs or
    checkpoints: after a commit that ran out of memory, which leaves DuckDB's in-memory copy of the table
    it wrote broken (module docstring), and every `REATTACH_MB` loaded, which frees what DuckDB keeps of
    the tables written. DuckDB keeps a file attached while any connection has a transaction or an unread
    result in it ("Unique file handle conflict" on `ATTACH`); the connections of jobs waiting for their
    share have neither, and find the catalog again by name."""
    client = job._job_client
    connection = client.sql_client.native_connection
    catalog, search_path = connection.execute(
        "SELECT current_database(), current_setting('search_path')"
    ).fetchone()
    credentials = client.config.credentials
    path = escape_duckdb_literal(str(credentials._conn_str()))
    name = escape_postgres_identifier(catalog)
    statements = (
        "USE memory",  # DuckDB does not detach a connection's current database
        f"DETACH {name}",
        f"ATTACH {path} AS {name} ({_attach_options(credentials)})",
        f"USE {name}",
        f"SET search_path = {escape_duckdb_literal(search_path)}",
    )
    with credentials.conn_pool._conn_lock:  # no job opens a connection meanwhile
        for statement in statements:
            connection.execute(statement).fetchall()


class _DuckDbClient(DuckDbClient):
    direct_load = True  # False: every merge table goes through the staging dataset, as in dlt

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pool = self.config.credentials.conn_pool
        # dlt resolves our credentials into its own class, whose pool is dlt's: made ours once, before use
        if type(pool) is DuckDbConnectionPool:
            pool.__class__ = _AttachingPool

    def initialize_storage(self, truncate_tables: Any = None) -> None:
        if self._package() is not None:
            bound_malloc()  # as the extraction does: a load alone (a package a crash left) otherwise runs
            # on glibc's defaults, and at scale large peaked 10 MB higher (bench/memory.py --load-apart)
            _free_extraction_garbage()
            _purge_at_once()
        super().initialize_storage(truncate_tables)
        self._hold_connection()

    def complete_load(self, load_id: str) -> None:
        super().complete_load(load_id)
        _release(self.config.credentials.conn_pool)
        _purge_as_before()

    def _hold_connection(self) -> None:
        """At the start of a package's load: keep the database open until `complete_load` (or a job fails)."""
        if self._package() is None:
            return
        pool = self.config.credentials.conn_pool
        _release(pool)  # held twice, it would never be given back
        setattr(pool, _HELD, pool.borrow_conn())

    def create_load_job(self, table: Any, file_path: str, load_id: str, restore: bool = False) -> Any:
        """The job, made to wait for its table's share of DuckDB's memory limit before it runs (and to run
        again alone with more if DuckDB runs out of it), to run its table's dedup when it is the table's only
        file loaded directly, and to checkpoint after it."""
        job = super().create_load_job(table, file_path, load_id, restore)
        if job is None:
            return job
        self._count_files(file_path)
        sql = ParsedLoadJobFileName.parse(file_path).file_format == "sql"
        dedup = not sql and self._folds(table["name"])
        limit = _size_mb((self.config.credentials.global_config or {}).get("memory_limit"))
        shares = _SHARES.setdefault(self._database, _MemoryShares())  # atomic
        claim, run = table_claim_mb(table, sql), job.run
        pool = self.config.credentials.conn_pool

        # `run` is its own transaction: a job of another file format (insert_values) opens one. The dedup:
        # a crash before it runs the job again, and the dedup then removes both copies
        steps = [run, lambda: _dedup(job, table)] if dedup else [run]

        mb = os.path.getsize(file_path) / 2**20  # the file moves folders while the job runs

        def run_within_share() -> None:
            try:
                _run_or_retry_alone(steps, job, table, shares, claim, limit)
                _write_out(job, shares, limit, mb)
            except BaseException:
                _release(pool)  # the load may stop here: the database must not stay open (and locked)
                raise

        job.run = run_within_share
        return job

    def _count_files(self, file_path: str) -> None:
        """Count the package's data files by table, once per package (they do not change while it loads)."""
        package = self._package()
        if package is None or package.files is not None:
            return
        folder = Path(file_path).parent.parent
        paths = [p for sub in _JOB_FOLDERS if (folder / sub).is_dir() for p in (folder / sub).iterdir()]
        parsed = (ParsedLoadJobFileName.parse(p.name) for p in paths)
        package.files = Counter(f.table_name for f in parsed if f.file_format != "sql")

    def _folds(self, table_name: str) -> bool:
        """Whether the copy job of `table_name` runs its dedup, instead of a follow-up job (the package's only
        file of a table loaded directly; module docstring). Not known in a process that resumed the package
        after the table's copy: the follow-up job then runs the dedup again, which changes nothing."""
        package = self._package()
        files = package.files if package is not None else None
        return files is not None and files[table_name] == 1 and self._loads_directly(table_name)

    def should_load_data_to_staging_dataset(self, table_name: str) -> bool:
        if self._loads_directly(table_name):
            return False
        return super().should_load_data_to_staging_dataset(table_name)

    def _create_merge_followup_jobs(self, table_chain: Any) -> list[Any]:
        name = table_chain[0]["name"]
        if not self._loads_directly(name):
            return [UniqueFirstMergeJob.from_table_chain(table_chain, self.sql_client)]
        if self._folds(name):
            return []
        return [EmptyTableMergeJob.from_table_chain(table_chain, self.sql_client)]

    @property
    def _database(self) -> str:
        return str(self.config.credentials.database)

    def _package(self) -> _Package | None:
        """What this load found out about the package being loaded (None: not loading a package)."""
        try:
            load_id = load_package_state()["load_id"]
        except CurrentLoadPackageStateNotAvailable:
            return None
        package = _PACKAGES.get(self._database)
        if package is None or package.load_id != load_id:
            package = _PACKAGES[self._database] = _Package(load_id)
        return package

    def _loads_directly(self, table_name: str) -> bool:
        """Whether the package being loaded copies `table_name` straight into its destination table."""
        package = self._package() if self.direct_load else None
        if package is None:
            return False
        answers = package.direct
        table = self.sql_client.make_qualified_table_name(table_name)
        if table not in answers:  # asked first: preparing the table schema took 0.7 s of a 10 s load
            direct = self._may_load_directly(table_name)
            answers[table] = direct and not self._holds_other_loads(table, package.load_id)
        return answers[table]

    def _may_load_directly(self, table_name: str) -> bool:
        table = self.prepare_load_table(table_name)
        return (
            resolve_merge_strategy(self.schema.tables, table, self.capabilities) == "delete-insert"
            and len(get_nested_tables(self.schema.tables, table_name)) == 1
            and not table.get("parent")
            and self._load_id_column in table["columns"]
            and not (table.get("x-merge-source-filter") or table.get("x-merge-destination-scope"))
        )

    @property
    def _load_id_column(self) -> str:
        return self.schema.naming.normalize_identifier(C_DLT_LOAD_ID)

    def _holds_other_loads(self, table: str, load_id: str) -> bool:
        """Whether `table` (qualified) holds a row that package `load_id` did not write.

        dlt asks about every table of the schema, also those without a file in the package, before it
        migrates them. Such a table may lack `_dlt_load_id` in the destination while the schema has it:
        a nested table of dlt's own normalizer (a `--history` run's `deals__label_ids`) in a dataset whose
        schema is another dataset's (the pipeline's state and schema stay with the dataset loaded last,
        where its state is newer), where the connector's child tables carry it. The query on that column
        failed the load, and every later one with the package left pending. Such a table holds only rows
        of earlier loads (this package adds the column before it writes a row)."""
        # dlt also asks clients it has not connected (creating a job, a merge job)
        connected = self.sql_client.native_connection is not None
        with contextlib.nullcontext() if connected else self.sql_client:
            try:
                columns = self._columns(table)
            except DatabaseUndefinedRelation:
                return False  # not created yet
            if self._load_id_column in columns:
                column = self.sql_client.escape_column_name(self._load_id_column)
                query = f"SELECT 1 FROM {table} WHERE {column} IS DISTINCT FROM %s LIMIT 1"
                return bool(self.sql_client.execute_sql(query, load_id))
            return bool(self.sql_client.execute_sql(f"SELECT 1 FROM {table} LIMIT 1"))

    def _columns(self, table: str) -> list[str]:
        """The columns `table` (qualified) has in the destination: a query without rows, 0.2 ms where
        DuckDB's information schema took 2 ms (a package asks about each of its 77 tables)."""
        with self.sql_client.execute_query(f"SELECT * FROM {table} LIMIT 0") as cursor:
            return [description[0] for description in cursor.description or ()]


_restore_purge: Callable[[], None] | None = None  # puts DuckDB's allocator back as it was before a load


def _purge_at_once() -> None:
    """While a package loads, DuckDB gives the memory its jobs free back at once (`purge_duckdb_at_once`):
    side by side, a large sync peaked at 241.8 against 247.0 MB (3 runs), a small one at 224.8 against 224.4
    (5 runs), for a load 0.3-0.8 s longer (bench/RESULTS.md, stop 34). Undone when the package's load
    completes: DuckDB used otherwise in the process keeps its own setting."""
    global _restore_purge
    if _restore_purge is None:
        _restore_purge = purge_duckdb_at_once()


def _purge_as_before() -> None:
    global _restore_purge
    restore, _restore_purge = _restore_purge, None
    if restore is not None:
        restore()


def _free_extraction_garbage() -> None:
    """Before a package loads: free what the extraction left in reference cycles (dlt's pipes with their
    resources' generators and what those hold, copies of the schema, connection pools: about 11,000 objects
    at scale large), which only a full collection frees and a process runs one seldom: DuckDB then loaded on
    top of it. At scale large a collection and a trim after the extraction took the process from 268-271 MB
    to 191-199 MB, a trim alone to 204-240 MB (extraction only, one-off script)."""
    gc.collect()
    release_memory(min_interval_s=0)


def _release(pool: Any) -> None:
    """Give back the connection held for a package's load in `pool`, if any (from any thread)."""
    held = pool.__dict__.pop(_HELD, None)  # atomic: a failing job and `complete_load` may both release
    if held is not None:
        pool.return_conn(held)


def _run_or_retry_alone(
    steps: list[Callable[[], None]],
    job: Any,
    table: Any,
    shares: _MemoryShares,
    claim: float,
    limit: float | None,
) -> None:
    """Run the steps of `job` (a transaction each) within its share of DuckDB's memory limit; from a step
    that ran out of memory on, alone and with the limit raised, doubled again each time it still runs out,
    up to `max_memory_mb()`; after a commit that ran out, in the database attached again (module
    docstring)."""
    pending = list(steps)
    raised: float | None = None  # None: within the job's share of the limit
    reattach = False
    ceiling = max_memory_mb()
    while True:
        ran_with = raised if raised is not None else limit
        with _share(job, shares, claim, limit, raised):
            if reattach:
                _reattach(job)
            try:
                while pending:
                    pending[0]()
                    pending.pop(0)
            except Exception as exc:
                at_commit = _ran_out(exc)
                if ran_with is None or at_commit is None:
                    raise
                if at_commit and not _reattachable(job):
                    raise DestinationTerminalException(
                        f"DuckDB ran out of memory committing the rows of {job.file_name()} (table"
                        f" {table['name']}) with a {ran_with:g} MB memory limit, in the database of a"
                        " connection handed to this destination, which it does not attach again: DuckDB's"
                        " copy of the table is broken after such a commit. Raise the memory limit."
                    ) from exc
                if ran_with >= ceiling:
                    raise DestinationTerminalException(
                        f"DuckDB ran out of memory loading {job.file_name()} (table {table['name']}) even"
                        f" with a {ran_with:g} MB memory limit, 80% of this machine's memory"
                    ) from exc
                shares.run_alone_next()  # no job starts in what DuckDB left before this one ran again
                reattach = at_commit
            else:
                return
        raised = min(math.ceil(max(claim, 2 * ran_with)), ceiling)
        logger.warning(
            "DuckDB ran out of its %s MB memory limit %s load job %s (table %s); running it again alone with"
            " %s MB%s",
            f"{ran_with:g}",
            "committing" if reattach else "in",
            job.file_name(),
            table["name"],
            raised,
            ", in the database attached again" if reattach else "",
        )


def _write_out(job: Any, shares: _MemoryShares, limit: float | None, mb: float) -> None:
    """Write what `job` committed to the database file (`mb`: its file's size): each time `REATTACH_MB` were
    loaded by detaching the database, which writes it, and attaching it again, which frees what DuckDB
    kept of the tables written; else by a checkpoint, with a claim of nothing (never while a job attaches
    the database)."""
    if limit is None:
        _checkpoint(job)
    elif _reattachable(job) and shares.loaded(mb):
        with shares.claim(0.0, limit, alone=True):
            _reattach(job)
        logger.info("DuckDB's database attached again after %s MB of files loaded", REATTACH_MB)
    else:
        with shares.claim(0.0, limit):
            _checkpoint(job)


@contextlib.contextmanager
def _share(
    job: Any, shares: _MemoryShares, claim: float, limit: float | None, raised: float | None
) -> Iterator[None]:
    """The job's claim on DuckDB's limit, or (`raised`) the database to itself at a raised limit."""
    if limit is None:
        yield
    elif raised is None:
        with shares.claim(claim, limit):
            yield
    else:
        with shares.claim(math.inf, limit, alone=True), _memory_limit(job, raised, limit):
            yield


def _ran_out(exc: BaseException) -> bool | None:
    """None: not DuckDB running out of memory; else whether it ran out while a commit wrote the rows, which
    DuckDB raises as a transaction error ("Failed to commit: could not allocate block of size ...", "...
    failed to pin block ...")."""
    ran_out = None
    for cause in causes(exc):
        if isinstance(cause, TransactionException) and _BUFFER_FULL.search(str(cause)) is not None:
            return True
        if isinstance(cause, OutOfMemoryException):
            ran_out = False
    return ran_out


def max_memory_mb() -> float:
    """The highest limit a job runs again with: DuckDB's own default, 80% of the machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4096.0
    return math.floor(0.8 * total / 2**20)


@contextlib.contextmanager
def _memory_limit(job: Any, mb: float, back_to_mb: float) -> Iterator[None]:
    """DuckDB's memory limit at `mb` while the block runs, `back_to_mb` after it."""
    connection = job._job_client.sql_client.native_connection
    connection.execute(f"SET GLOBAL memory_limit = '{mb:g}MB'")
    try:
        yield
    finally:
        with contextlib.suppress(DuckDBError):  # DuckDB spills what no longer fits, if it must
            connection.execute(f"SET GLOBAL memory_limit = '{back_to_mb:g}MB'")


def _checkpoint(job: Any) -> None:
    """Write what `job` committed (and any job before it) to the database file, unless another job is
    writing (module docstring: `_HELD`)."""
    with contextlib.suppress(TransactionException):  # "other write transactions active": a later job, or
        job._job_client.sql_client.native_connection.execute("CHECKPOINT")  # the close at the end, writes


def _dedup(job: Any, table: Any) -> None:
    """What the follow-up `EmptyTableMergeJob` would run, run by the job that copied the table's only file."""
    sql_client = job._job_client.sql_client  # the worker thread's client, set before `run`
    statements = EmptyTableMergeJob.generate_sql([table], sql_client)
    if statements:
        with sql_client.begin_transaction():
            sql_client.execute_many(statements)


class _DuckDb(dlt.destinations.duckdb):
    """dlt's DuckDB destination, with the merge of `merge_sql.py`; to dlt (state, config sections, names)
    it is the `duckdb` destination type."""

    @property
    def destination_type(self) -> str:
        base = dlt.destinations.duckdb
        return DestinationReference.normalize_type(f"{base.__module__}.{base.__qualname__}")

    settings: dict[str, Any] = {}  # DuckDB settings given to `duckdb()`

    @property
    def client_class(self) -> type[DuckDbClient]:
        return _DuckDbClient

    def configuration(self, initial_config: Any, accept_partial: bool = False) -> Any:
        """dlt's resolved configuration, whose DuckDB settings are `DUCKDB_SETTINGS`, then those configured
        (`global_config`), then `settings`: set on the credentials before dlt resolves them, the defaults
        hid a configured memory limit or thread count (dlt fills in only what is unset)."""
        config = super().configuration(initial_config, accept_partial)
        credentials = config.credentials
        if isinstance(credentials, DuckDbCredentials):
            configured = credentials.global_config or {}
            credentials.global_config = {**DUCKDB_SETTINGS, **configured, **self.settings}
        return config


# destinations whose parquet loading dlt supports: several times faster than insert_values
PARQUET_DESTINATIONS = {"duckdb", "filesystem", "motherduck", "snowflake", "bigquery", "athena", "databricks"}
# dlt loads CSV into these with FORCE_NULL on every nullable column, which turns empty strings into NULL
EXACT_INSERT_DESTINATIONS = {"postgres", "redshift"}


def loader_file_format(destination: Any) -> str | None:
    """The fastest loader file format that keeps every value as it is for `destination` (a dlt destination,
    or its name: dlt's own for that name), None: dlt's default. Parquet for `postgres_load.postgres()`, which
    loads it by COPY (its module docstring); `insert_values` for dlt's own Postgres destination."""
    if is_exact_postgres(destination):
        return "parquet"
    # by type: a named destination (`dlt.destinations.duckdb(destination_name="crm")`) is still duckdb
    name = destination if isinstance(destination, str) else Destination.to_name(destination.destination_type)
    if name in PARQUET_DESTINATIONS:
        return "parquet"
    if name in EXACT_INSERT_DESTINATIONS:
        return "insert_values"
    return None
