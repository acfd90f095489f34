"""The DuckDB destination as the pipeline script creates it: faster loads in bounded memory.

DuckDB runs inside the sync's process, so its memory is the sync's memory. `preserve_insertion_order =
false` lets it copy and merge without keeping row order (about 20% faster loads here; dlt's merge does not
depend on it). `memory_limit` caps its buffer pool (it spills to disk beyond that) and the allocator hands
freed memory back after each task past `allocator_flush_threshold`, so a sync's peak memory does not grow
with the size of the company. The limit is shared by the queries running at once, `LOAD_JOBS` jobs of one
DuckDB thread each (dlt would run 20).

What DuckDB cannot spill is a block (256 KiB) per column of each row group it writes: an insert into a table
of 400 columns failed at 64 MB, one of 300 at 112 MB (measured: about 0.4 MB per column). So the limit is
`MIN_MEMORY_MB` or, for a schema with wider tables (many custom fields), enough for the widest `LOAD_JOBS`
tables at once (a `memory_limit` given to `duckdb()` is raised too when the schema needs more: the load
would fail otherwise). The merge deduplicates staged rows only where keys repeat (`merge_sql.py`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import dlt
from dlt.common.destination.reference import DestinationReference
from dlt.common.schema import Schema
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from dlt.destinations.impl.duckdb.duck import DuckDbClient

from .merge_sql import UniqueFirstMergeJob

MIN_MEMORY_MB = 64
DUCKDB_SETTINGS: dict[str, Any] = {
    "preserve_insertion_order": False,
    "memory_limit": f"{MIN_MEMORY_MB}MB",
    "threads": 1,
    "allocator_flush_threshold": "8MB",
}
MB_PER_COLUMN = 0.5  # DuckDB's unspillable memory per column of a table being written (see above)
LOAD_JOBS = 2  # load jobs DuckDB runs at once (see the module docstring)


def duckdb(path: str, **settings: Any) -> Any:
    """A dlt DuckDB destination writing to `path`, with `DUCKDB_SETTINGS` (overridable by keyword)."""
    credentials = DuckDbCredentials(path)
    credentials.global_config = {**DUCKDB_SETTINGS, **settings}
    return _DuckDb(credentials=credentials, max_parallel_load_jobs=LOAD_JOBS)


def memory_limit_mb(schema: Schema, jobs: int = LOAD_JOBS) -> int:
    """DuckDB's memory limit for loading `schema`: room for its `jobs` widest tables written at once."""
    widths = sorted((len(t.get("columns") or {}) for t in schema.data_tables()), reverse=True)
    return max(MIN_MEMORY_MB, math.ceil(MB_PER_COLUMN * sum(widths[:jobs])))


_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?)I?B?\s*$", re.IGNORECASE)
_UNIT_MB = {"": 1e-6, "K": 1e-3, "M": 1, "G": 1e3, "T": 1e6}


def _size_mb(value: Any) -> float | None:
    match = _SIZE.match(str(value))
    return float(match[1]) * _UNIT_MB[match[2].upper()] if match else None


class _DuckDbClient(DuckDbClient):
    def initialize_storage(self, truncate_tables: Any = None) -> None:
        """Raise DuckDB's memory limit for a schema with wide tables, before anything is written."""
        config = self.config.credentials.global_config or {}
        needed = memory_limit_mb(self.schema)
        configured = _size_mb(config.get("memory_limit"))
        if configured is not None and configured < needed:
            config["memory_limit"] = f"{needed}MB"  # for connections opened later in this load
            self.sql_client.execute_sql(f"SET GLOBAL memory_limit = '{needed}MB'")
        super().initialize_storage(truncate_tables)

    def _create_merge_followup_jobs(self, table_chain: Any) -> list[Any]:
        return [UniqueFirstMergeJob.from_table_chain(table_chain, self.sql_client)]


class _DuckDb(dlt.destinations.duckdb):
    """dlt's DuckDB destination, with the merge of `merge_sql.py`; to dlt (state, config sections, names)
    it is the `duckdb` destination type."""

    @property
    def destination_type(self) -> str:
        base = dlt.destinations.duckdb
        return DestinationReference.normalize_type(f"{base.__module__}.{base.__qualname__}")

    @property
    def client_class(self) -> type[DuckDbClient]:
        return _DuckDbClient


# destinations whose parquet loading dlt supports: several times faster than insert_values
PARQUET_DESTINATIONS = {"duckdb", "filesystem", "motherduck", "snowflake", "bigquery", "athena", "databricks"}
# dlt loads CSV into these with FORCE_NULL on every nullable column, which turns empty strings into NULL
EXACT_INSERT_DESTINATIONS = {"postgres", "redshift"}


def loader_file_format(destination_name: str) -> str | None:
    """The fastest loader file format that keeps every value as it is (None: dlt's default)."""
    if destination_name in PARQUET_DESTINATIONS:
        return "parquet"
    if destination_name in EXACT_INSERT_DESTINATIONS:
        return "insert_values"
    return None
