"""The DuckDB destination as the pipeline script creates it: faster loads in bounded memory.

DuckDB runs inside the sync's process, so its memory is the sync's memory. `preserve_insertion_order =
false` lets it copy and merge without keeping row order (about 20% faster loads here; dlt's merge does not
depend on it). `memory_limit` caps its buffer pool (it spills to disk beyond that) and the allocator hands
freed memory back after each task past `allocator_flush_threshold`, so a sync's peak memory does not grow
with the size of the company. The limit is shared by the queries running at once: dlt would run up to 20
load jobs together, and a merge of a large table (a window over the staged rows for deduplication) then ran
out of memory at 192 MB; `LOAD_JOBS` jobs of one DuckDB thread each keep both cores busy and fit.
"""

from __future__ import annotations

from typing import Any

import dlt
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

DUCKDB_SETTINGS: dict[str, Any] = {
    "preserve_insertion_order": False,
    "memory_limit": "128MB",
    "threads": 1,
    "allocator_flush_threshold": "8MB",
}
LOAD_JOBS = 4  # load jobs DuckDB runs at once (see the module docstring)


def duckdb(path: str, **settings: Any) -> Any:
    """A dlt DuckDB destination writing to `path`, with `DUCKDB_SETTINGS` (overridable by keyword)."""
    credentials = DuckDbCredentials(path)
    credentials.global_config = {**DUCKDB_SETTINGS, **settings}
    return dlt.destinations.duckdb(credentials=credentials, max_parallel_load_jobs=LOAD_JOBS)


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
