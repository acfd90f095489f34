"""Rows a run's load left in the destination, per table: what the run summary and the bench call rows loaded.

dlt counts rows as the normalizer writes them, and not all of them stay: a placeholder that clears the old
child rows of a parent left without any is hard deleted by the load (`arrow_pages.py`), a record read twice
in one run (v1 offset pages overlap, a record updated while it was paged) is deduplicated by the merge, and
so is a hard-deleted record (`hard_delete`). The destination itself knows what stayed: every row the load
inserted carries its load id. On DuckDB one query counts them, over the tables the run wrote into only;
DuckDB skips the row groups of older loads on `_dlt_load_id`'s min/max, so a run costs about its own rows.
Elsewhere the same query reads the load id of every row of those tables (Postgres has no index on it; a
warehouse billed by bytes scanned would charge each run for it), so other destinations report the rows
written (`counts_loaded`). A destination that does not merge (filesystem) appends every row written: its
rows written are its rows loaded.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import dlt
from dlt.common.destination.reference import Destination
from dlt.common.schema.typing import C_DLT_LOAD_ID

logger = logging.getLogger(__name__)
_LOAD_ID = re.compile(r"^[0-9]+(\.[0-9]+)?$")  # dlt's load ids: a timestamp (never quoted text)


def merges(destination: Any) -> bool:
    """Whether `destination` merges (filesystem without a table format appends: nothing is replaced)."""
    caps = destination.capabilities()
    return "delete-insert" in (caps.supported_merge_strategies or ())


def counts_loaded(destination: Any) -> bool:
    """Whether the run's rows are counted in `destination` as loaded (DuckDB; see the module docstring) or
    given as the normalizer wrote them: the same where it does not merge."""
    return _counted_there(destination) or not merges(destination)


def _counted_there(destination: Any) -> bool:
    # by type: a named destination (`dlt.destinations.duckdb(destination_name="crm")`) is still duckdb
    return Destination.to_name(destination.destination_type) == "duckdb"


def written_rows(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Rows the last run's normalizer wrote per table, dlt's own tables left out."""
    info = _normalize_info(pipeline)
    counts = dict(info.row_counts) if info else {}
    return {table: rows for table, rows in counts.items() if rows and not table.startswith("_dlt")}


def loaded_rows(pipeline: dlt.Pipeline) -> dict[str, int]:
    """Rows of the last run's load now in the destination per table (tables without any left out)."""
    return counted_rows(pipeline)[0]


def counted_rows(pipeline: dlt.Pipeline) -> tuple[dict[str, int], bool]:
    """`loaded_rows`, and whether they are the rows loaded: False where they are the rows written, as on a
    destination not counted (`counts_loaded`) or where DuckDB's count failed (a warning says why), so that
    the run's summary does not call them loaded."""
    written = written_rows(pipeline)
    info = _normalize_info(pipeline)
    load_ids = [i for i in (info.loads_ids if info else []) if _LOAD_ID.match(i)]
    destination = pipeline.destination
    if not written or not load_ids or not merges(destination) or not _counted_there(destination):
        return written, counts_loaded(destination)
    schema = pipeline.default_schema
    column = schema.naming.normalize_identifier(C_DLT_LOAD_ID)
    counted = [t for t in written if column in schema.tables.get(t, {}).get("columns", {})]
    try:
        counts = _count(pipeline, counted, column, load_ids) if counted else {}
    except Exception as exc:  # the summary must not fail a run that loaded: say what it counts instead
        logger.warning("rows counted as written, not as loaded: the destination's counts failed (%s)", exc)
        return written, False
    # a table without load ids (none of the connector's) can only be counted as written
    out = {table: rows for table, rows in written.items() if table not in counts}
    out.update(counts)
    return {table: rows for table, rows in out.items() if rows}, True


def _normalize_info(pipeline: dlt.Pipeline) -> Any:
    trace = pipeline.last_trace
    return trace.last_normalize_info if trace else None


def _count(pipeline: dlt.Pipeline, tables: list[str], column: str, load_ids: list[str]) -> dict[str, int]:
    with pipeline.sql_client() as client:
        ids = ", ".join(f"'{load_id}'" for load_id in load_ids)
        where = f"{client.escape_column_name(column)} IN ({ids})"
        query = " UNION ALL ".join(
            f"SELECT {i}, COUNT(*) FROM {client.make_qualified_table_name(table)} WHERE {where}"
            for i, table in enumerate(tables)
        )
        rows = client.execute_sql(query) or []
    return {tables[i]: int(count) for i, count in rows}
