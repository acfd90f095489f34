"""The destination's history of the pipeline's state, kept short.

dlt stores the whole pipeline state in the destination with every load that changed it: a row of
`_dlt_pipeline_state` per load, never deleted. Ours carries the digests of the records read in full
(`record_digests`): 72 KB a row for a small company, 827 KB for a large one (the emulator's scales), and
every run changes the state (its cursors, the server time), so a sync every 15 minutes added 7 MB a day to a
small company's database and 79 MB to a large one's. dlt only ever reads the row of the newest completed
load (its `get_stored_state`), so `prune_state_history` deletes the rows of this pipeline older than its
newest `KEEP_STATE_ROWS` completed loads; rows of loads not completed (nothing reads them) go once they are
older than those. Destinations without SQL (filesystem) are left as they are.
"""

from __future__ import annotations

import logging
from typing import Any

import dlt
from dlt.common.schema.typing import C_DLT_LOAD_ID, C_DLT_LOADS_TABLE_LOAD_ID
from dlt.common.versioned_state import decompress_state
from dlt.destinations.job_client_impl import SqlJobClientBase

logger = logging.getLogger(__name__)

KEEP_STATE_ROWS = 3  # the newest completed loads whose state rows stay (dlt reads the newest only)


def prune_state_history(pipeline: dlt.Pipeline, keep: int = KEEP_STATE_ROWS) -> None:
    """Delete this pipeline's state rows older than its newest `keep` completed loads. Housekeeping: a
    failure (no dataset yet, a destination that refuses) is logged, never raised."""
    if not pipeline.default_schema_name:  # never ran here (or its folder was deleted): dlt restores it first
        return
    try:
        with pipeline.destination_client() as client:
            if isinstance(client, SqlJobClientBase) and client.is_storage_initialized():
                _prune(client, pipeline.pipeline_name, max(1, keep))
    except Exception as exc:  # the sync itself succeeded or has yet to run: do not fail it for this
        logger.warning("could not prune the pipeline's state history: %s", exc)


def _prune(client: SqlJobClientBase, pipeline_name: str, keep: int) -> None:
    """The rows `get_stored_state` would pass over, found as it finds the one it reads."""
    sql = client.sql_client
    state = sql.make_qualified_table_name(client.schema.state_table_name)
    loads = sql.make_qualified_table_name(client.schema.loads_table_name)
    load_id, dlt_load_id, name, status = client._norm_and_escape_columns(
        C_DLT_LOADS_TABLE_LOAD_ID, C_DLT_LOAD_ID, "pipeline_name", "status"
    )
    before, after = sql._limit_clause_sql(keep)
    newest = (
        f"SELECT {before} s.{dlt_load_id} AS kept FROM {state} AS s JOIN {loads} AS l"
        f" ON l.{load_id} = s.{dlt_load_id} WHERE s.{name} = %s AND l.{status} = 0"
        f" ORDER BY s.{dlt_load_id} DESC {after}"
    )
    older = f"{dlt_load_id} < (SELECT MIN(kept) FROM ({newest}) AS newest)"
    sql.execute_sql(f"DELETE FROM {state} WHERE {name} = %s AND {older}", pipeline_name, pipeline_name)


def other_pipelines_source_state(pipeline: dlt.Pipeline, source: str) -> dict[str, dict[str, Any]]:
    """The `source` state in the newest stored state of each other pipeline loading into this pipeline's
    dataset, by pipeline name. Empty where there is nothing to read (no dataset yet, no SQL)."""
    try:
        with pipeline.destination_client() as client:
            if not isinstance(client, SqlJobClientBase) or not client.is_storage_initialized():
                return {}
            sql = client.sql_client
            table = sql.make_qualified_table_name(client.schema.state_table_name)
            name, state, created = client._norm_and_escape_columns("pipeline_name", "state", "created_at")
            query = f"SELECT {name}, {state} FROM {table} WHERE {name} <> %s ORDER BY {created}"
            rows = sql.execute_sql(query, pipeline.pipeline_name) or []
    except Exception as exc:  # no state table yet, a destination that refuses: nothing known
        logger.debug("could not read other pipelines' states: %s", exc)
        return {}
    states: dict[str, dict[str, Any]] = {}
    for pipeline_name, blob in rows:  # oldest first: each pipeline's newest wins
        try:
            states[pipeline_name] = decompress_state(blob).get("sources", {}).get(source) or {}
        except Exception:  # a row dlt could not read either
            continue
    return states
