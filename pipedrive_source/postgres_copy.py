"""The load jobs of `postgres_load`'s destination (module docstring there): a parquet file by COPY in CSV
form. Apart, as dlt's Postgres client brings psycopg2 and libpq (about 4 MB) into every process that imports
it, which a DuckDB sync never needs."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from dlt.common.destination.client import HasFollowupJobs, LoadJob, PreparedTableSchema, RunnableLoadJob
from dlt.common.storages.load_package import ParsedLoadJobFileName
from dlt.destinations.impl.postgres.postgres import PostgresClient

# rows per COPY: one batch's CSV is in memory at a time (a batch of deals, 74 columns: about 10 MB)
BATCH_ROWS = 20_000
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


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


class ExactPostgresClient(PostgresClient):
    def create_load_job(
        self, table: PreparedTableSchema, file_path: str, load_id: str, restore: bool = False
    ) -> LoadJob:
        if ParsedLoadJobFileName.parse(file_path).file_format == "parquet":
            return ParquetCopyJob(file_path)
        return super().create_load_job(table, file_path, load_id, restore)
