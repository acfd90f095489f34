"""The Postgres destination as the pipeline script creates it: parquet files loaded by COPY, every value kept.

dlt loads Postgres from `insert_values` files (exact, but a sync's Arrow tables are turned back into Python
rows to write them: scale small's 140k rows took 4.5 s to normalize and 2.9 s to load, against 0.2 and 1.8 s
here; medium's 556k rows 21.9 and 9.2 s against 0.3 and 5.0 s; medians of 3, side by side), from CSV files
(its COPY names every nullable column in `FORCE_NULL`, so an empty string arrives as NULL) or from parquet
files through an ADBC driver (not installed; its tables get `json` columns instead of `jsonb`). So the
connector writes parquet files, as for DuckDB: both the Arrow tables and the pages dlt's JSON path
normalizes (variant columns, history rows) are written with their types and nulls. `ParquetCopyJob` reads a
file a batch at a time, writes each batch as CSV with Arrow's writer, which quotes every string (`""` is
the empty string) and leaves a null empty and unquoted, and COPYs it with `NULL ''` and no `FORCE_NULL`:
NULL stays NULL and "" stays "". A binary column (none in Pipedrive's tables) goes as bytea's hex text.
Timestamps go with their zone (`Z`), doubles in their shortest exact form, decimals as written.

Everything else is dlt's Postgres destination: the merges, the staging dataset, the schema's types
(`json` columns are `jsonb` whatever the file format), configuration under `destination.postgres`.
"""

from __future__ import annotations

import io
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from dlt.common.destination.client import HasFollowupJobs, LoadJob, PreparedTableSchema, RunnableLoadJob
from dlt.common.destination.reference import DestinationReference
from dlt.common.schema.typing import TColumnSchema
from dlt.common.storages.load_package import ParsedLoadJobFileName
from dlt.destinations.impl.postgres.factory import PostgresTypeMapper
from dlt.destinations.impl.postgres.postgres import PostgresClient

# rows per COPY: one batch's CSV is in memory at a time (a batch of deals, 74 columns: about 10 MB)
BATCH_ROWS = 20_000
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


def postgres(credentials: Any = None, **kwargs: Any) -> Any:
    """A dlt Postgres destination (`credentials`: a connection string, dlt's credentials, or None to resolve
    them from dlt's configuration) loading the parquet files `loader_file_format` picks for it exactly."""
    return _Postgres(credentials=credentials, **kwargs)


def is_exact_postgres(destination: Any) -> bool:
    """Whether `destination` is this module's Postgres destination (dlt's own needs `insert_values`)."""
    return isinstance(destination, _Postgres)


def copy_csv(table: pa.Table | pa.RecordBatch) -> bytes:
    """`table` as CSV that Postgres's `COPY ... (FORMAT CSV, NULL '')` reads back value for value."""
    columns = [_as_copy_text(column) for column in table.columns]
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(pa.table(columns, names=table.schema.names), sink, _CSV_OPTIONS)
    return sink.getvalue().to_pybytes()


def _as_copy_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """bytea takes hex text (`\\x...`); Arrow's CSV writer would write the raw bytes."""
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        return column
    values = [None if value is None else "\\x" + value.hex() for value in column.to_pylist()]
    return pa.array(values, pa.string())


class ParquetCopyJob(RunnableLoadJob, HasFollowupJobs):
    """A parquet file into its table by COPY in CSV form (module docstring), in one transaction."""

    def run(self) -> None:
        sql_client = self._job_client.sql_client
        table = sql_client.make_qualified_table_name(self.load_table_name)
        parquet = pq.ParquetFile(self._file_path)
        names = ",".join(sql_client.escape_column_name(name) for name in parquet.schema_arrow.names)
        copy = f"COPY {table} ({names}) FROM STDIN WITH (FORMAT CSV, NULL '', ENCODING 'UTF8')"
        with sql_client.begin_transaction(), sql_client.native_connection.cursor() as cursor:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
                cursor.copy_expert(copy, io.BytesIO(copy_csv(batch)))


class _PostgresTypes(PostgresTypeMapper):
    def to_destination_type(self, column: TColumnSchema, table: PreparedTableSchema) -> str:
        if column["data_type"] == "json":  # dlt makes it `json` for parquet files: ADBC cannot copy jsonb
            return self.sct_to_unbound_dbt["json"]
        return super().to_destination_type(column, table)


class _PostgresClient(PostgresClient):
    def create_load_job(
        self, table: PreparedTableSchema, file_path: str, load_id: str, restore: bool = False
    ) -> LoadJob:
        if ParsedLoadJobFileName.parse(file_path).file_format == "parquet":
            return ParquetCopyJob(file_path)
        return super().create_load_job(table, file_path, load_id, restore)


class _Postgres(dlt.destinations.postgres):
    """dlt's Postgres destination with `ParquetCopyJob`; to dlt (state, config sections, names) it is the
    `postgres` destination type."""

    @property
    def destination_type(self) -> str:
        base = dlt.destinations.postgres
        return DestinationReference.normalize_type(f"{base.__module__}.{base.__qualname__}")

    @property
    def client_class(self) -> type[PostgresClient]:
        return _PostgresClient

    def _raw_capabilities(self) -> Any:
        caps = super()._raw_capabilities()
        caps.loader_file_format_selector = None  # dlt's drops parquet where no ADBC driver is installed
        caps.type_mapper = _PostgresTypes
        return caps
