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

`EmptyTableMergeJob` finishes a table whose rows were copied straight into its empty destination table
instead of the staging dataset (`destinations.py`): it leaves there the rows the merge would have inserted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlt.common.destination import PreparedTableSchema
from dlt.common.schema.typing import TSortOrder
from dlt.common.schema.utils import get_columns_names_with_prop, get_dedup_sort_tuple
from dlt.destinations.sql_client import SqlClientBase
from dlt.destinations.sql_jobs import SqlMergeFollowupJob

_ROWS = "_dlt_staged"  # alias of the staged table in the queries below
_DUPS = "_dlt_dup_keys"


class UniqueFirstMergeJob(SqlMergeFollowupJob):
    @classmethod
    def gen_key_table_clauses(
        cls,
        root_table_name: str,
        staging_root_table_name: str,
        primary_keys: Sequence[str],
        merge_keys: Sequence[str],
        for_delete: bool,
        source_filter: str | None = None,
    ) -> list[str]:
        """dlt's rows to replace, one `EXISTS` per key: dlt joins the staged rows on `primary key OR merge
        key`, which DuckDB cannot hash and compares every destination row with every staged one (a child
        table keyed by its parent: 3.8 s of an incremental large sync's 10.6 s load for deals__set_field
        alone). Separate `EXISTS` are hash semi-joins; a row matching either is replaced, as with the OR.
        With one key this is dlt's clause as it is."""
        matches = " OR ".join(
            f"EXISTS (SELECT 1 FROM {staging_root_table_name} as s WHERE "
            f"{cls._gen_staging_rows_cond(key.format(d='d', s='s'), source_filter)})"
            for key in cls._gen_key_table_clauses(primary_keys, merge_keys)
        )
        return [f"FROM {root_table_name} as d WHERE {matches}"]

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


class EmptyTableMergeJob(SqlMergeFollowupJob):
    """The merge of a table (delete-insert, no nested tables) whose rows were copied straight into its
    destination table, which held no rows of other loads: it leaves the rows dlt's merge would insert into
    an empty table. That is one row per primary key, the one dlt's dedup keeps (its select, with the same
    `dedup_sort`, over the rows whose key repeats: set aside, deleted, the kept ones inserted again), then
    none that the hard delete column marks deleted (dlt applies that condition to the rows its dedup kept).
    A merge key deletes nothing: there are no older rows. Without duplicates (almost always) this costs a
    grouping of the key columns and a scan. Not DuckDB's `rowid` to tell duplicates apart: DuckDB 2.0 picks
    wrong rows, or fails, when a `rowid` subquery repeats another subquery of the statement.
    """

    @classmethod
    def generate_sql(
        cls, table_chain: Sequence[PreparedTableSchema], sql_client: SqlClientBase[Any]
    ) -> list[str]:
        (table,) = table_chain
        name = sql_client.make_qualified_table_name(table["name"])
        escape = sql_client.escape_column_name
        keys = cls._escape_list(get_columns_names_with_prop(table, "primary_key"), escape)
        sql = []
        if keys and not table.get("x-stage-data-deduplicated", False):
            sql += cls._gen_dedup_in_place_sql(table, name, keys, sql_client)
        _, not_deleted = cls._get_hard_delete_col_and_cond(
            table, escape, sql_client.capabilities.escape_literal, invert=True
        )
        if not_deleted:
            sql.append(f"DELETE FROM {name} WHERE NOT ({not_deleted})")
        return sql

    @classmethod
    def _gen_dedup_in_place_sql(
        cls, table: PreparedTableSchema, name: str, keys: Sequence[str], sql_client: SqlClientBase[Any]
    ) -> list[str]:
        repeated_keys = cls._new_temp_table_name(table["name"], "repeated_keys", sql_client)
        repeated_rows = cls._new_temp_table_name(table["name"], "repeated_rows", sql_client)
        joined = ", ".join(keys)
        same_key = " AND ".join(f"{repeated_keys}.{key} = {_ROWS}.{key}" for key in keys)
        key_repeats = f"EXISTS (SELECT 1 FROM {repeated_keys} WHERE {same_key})"
        columns = cls._escape_list(get_columns_names_with_prop(table, "name"), sql_client.escape_column_name)
        sort = get_dedup_sort_tuple(table)
        if sort:
            sort = (sql_client.escape_column_name(sort[0]), sort[1])
        kept = cls.gen_select_from_dedup_sql(repeated_rows, keys, columns, sort)
        return [
            cls._to_temp_table(
                f"SELECT {joined} FROM {name} GROUP BY {joined} HAVING count(*) > 1",
                repeated_keys,
                keys[0],
                sql_client,
            ),
            cls._to_temp_table(
                f"SELECT * FROM {name} AS {_ROWS} WHERE {key_repeats}", repeated_rows, keys[0], sql_client
            ),
            f"DELETE FROM {name} AS {_ROWS} WHERE {key_repeats}",
            f"INSERT INTO {name}({', '.join(columns)}) {kept}",
        ]
