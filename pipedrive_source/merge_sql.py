"""dlt's delete-insert merge, deduplicating staged rows only where there are duplicates.

dlt deduplicates the staged rows of a merge by primary key with `ROW_NUMBER() OVER (PARTITION BY key)`
over every staged row and column: a sort of the whole load, which in DuckDB under our memory cap was most of
a full sync's load time (196k persons: 1.5-5.5 s, against 0.6 s for copying them as they are). Staged
rows are almost always unique already; duplicates come from v1 offset pages that overlap, a record updated
while it was paged, or a copy job retried after a crash, and they must still go. So the select below
takes the rows whose key is unique as they are and runs dlt's own dedup (same order, same `dedup_sort`,
same condition) over the rows whose key repeats: the same rows come out, and without duplicates the cost is
one grouping of the key columns. Everything else (deletes, temp tables, hard deletes, child tables) is
dlt's merge unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from dlt.common.schema.typing import TSortOrder
from dlt.destinations.sql_jobs import SqlMergeFollowupJob

_ROWS = "_dlt_staged"  # alias of the staged table in the queries below
_DUPS = "_dlt_dup_keys"


class UniqueFirstMergeJob(SqlMergeFollowupJob):
    @classmethod
    def gen_select_from_dedup_sql(
        cls,
        table_name: str,
        primary_keys: Sequence[str],
        columns: Sequence[str],
        dedup_sort: tuple[str, TSortOrder] | None = None,
        condition: str | None = None,
        condition_columns: Sequence[str] | None = None,
        skip_dedup: bool = False,
    ) -> str:
        if skip_dedup or not primary_keys:
            return super().gen_select_from_dedup_sql(
                table_name, primary_keys, columns, dedup_sort, condition, condition_columns, skip_dedup
            )
        keys = ", ".join(primary_keys)
        repeated = f"SELECT {keys} FROM {table_name} GROUP BY {keys} HAVING count(*) > 1"
        same_key = " AND ".join(f"{_DUPS}.{key} = {_ROWS}.{key}" for key in primary_keys)
        among_repeated = f"EXISTS (SELECT 1 FROM ({repeated}) AS {_DUPS} WHERE {same_key})"
        unique_rows = (
            f"SELECT {', '.join(columns)} FROM {table_name} AS {_ROWS}"
            f" WHERE NOT {among_repeated} AND ({condition or '1 = 1'})"
        )
        repeated_rows = f"(SELECT * FROM {table_name} AS {_ROWS} WHERE {among_repeated}) AS {_ROWS}"
        deduplicated = super().gen_select_from_dedup_sql(
            repeated_rows, primary_keys, columns, dedup_sort, condition, condition_columns
        )
        return f"{unique_rows}\nUNION ALL\n{deduplicated}"
