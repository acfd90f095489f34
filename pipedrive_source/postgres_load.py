"""The Postgres destination as the pipeline script creates it: parquet files loaded by COPY, every value kept.

dlt loads Postgres from `insert_values` files (exact, but a sync's Arrow tables are turned back into Python
rows to write them: scale small's 140k rows took 4.5 s to normalize and 2.9 s to load, against 0.2 and 1.8 s
here; medium's 556k rows 21.9 and 9.2 s against 0.3 and 5.0 s; medians of 3, side by side), from CSV files
(its COPY names every nullable column in `FORCE_NULL`, so an empty string arrives as NULL) or from parquet
files through an ADBC driver (not installed; its tables get `json` columns instead of `jsonb`). So the
connector writes parquet files, as for DuckDB: both the Arrow tables and the pages dlt's JSON path
normalizes (variant columns, history rows) are written with their types and nulls. `ParquetCopyJob`
(`postgres_copy.py`, imported when a load starts) reads a file a batch at a time, writes each batch as CSV
with Arrow's writer, which quotes every string (`""` is the empty string) and leaves a null empty and
unquoted, and COPYs it with `NULL ''` and no `FORCE_NULL`: NULL stays NULL and "" stays "". A binary
column (none in Pipedrive's tables) goes as bytea's hex text. Timestamps go with their zone (`Z`), doubles
in their shortest exact form, decimals as written.

Everything else is dlt's Postgres destination: the merges, the staging dataset, the schema's types
(`json` columns are `jsonb` whatever the file format), configuration under `destination.postgres`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dlt
from dlt.common.destination.client import PreparedTableSchema
from dlt.common.destination.reference import Destination, DestinationReference
from dlt.common.schema.typing import TColumnSchema
from dlt.destinations.impl.postgres.factory import PostgresTypeMapper

if TYPE_CHECKING:
    from dlt.destinations.impl.postgres.postgres import PostgresClient


def postgres(credentials: Any = None, **kwargs: Any) -> Any:
    """A dlt Postgres destination (`credentials`: a connection string, dlt's credentials, or None to resolve
    them from dlt's configuration) loading the parquet files `loader_file_format` picks for it exactly."""
    return _Postgres(credentials=credentials, **kwargs)


def exact_destination(destination: Any) -> Any:
    """`destination` (a dlt destination, its factory or its name; None stays None), with dlt's own Postgres
    destination as `postgres()` with the same settings, however it is named: `"postgres"`,
    `"dlt.destinations.postgres"`, a named destination of that type, `dlt.destinations.postgres(...)`. dlt's
    own, without an ADBC driver, takes parquet files through its CSV load, which makes an empty string NULL;
    the orchestrators load parquet, and a `dlt.destinations.postgres(...)` handed to them took that path."""
    if destination is None or is_exact_postgres(destination):
        return destination
    resolved = Destination.from_reference(destination)  # raises for an unknown name, as dlt.pipeline would
    if type(resolved) is not dlt.destinations.postgres:  # a subclass of it may load its own way
        return destination
    return postgres(**resolved.config_params, **resolved.caps_params)


def is_exact_postgres(destination: Any) -> bool:
    """Whether `destination` is this module's Postgres destination (dlt's own needs `insert_values`)."""
    return isinstance(destination, _Postgres)


class _PostgresTypes(PostgresTypeMapper):
    def to_destination_type(self, column: TColumnSchema, table: PreparedTableSchema) -> str:
        if column["data_type"] == "json":  # dlt makes it `json` for parquet files: ADBC cannot copy jsonb
            return self.sct_to_unbound_dbt["json"]
        return super().to_destination_type(column, table)


class _Postgres(dlt.destinations.postgres):
    """dlt's Postgres destination with `ParquetCopyJob`; to dlt (state, config sections, names) it is the
    `postgres` destination type."""

    @property
    def destination_type(self) -> str:
        base = dlt.destinations.postgres
        return DestinationReference.normalize_type(f"{base.__module__}.{base.__qualname__}")

    @property
    def client_class(self) -> type[PostgresClient]:
        from .postgres_copy import ExactPostgresClient  # psycopg2 and libpq (4 MB): only when loading

        return ExactPostgresClient

    def _raw_capabilities(self) -> Any:
        caps = super()._raw_capabilities()
        caps.loader_file_format_selector = None  # dlt's drops parquet where no ADBC driver is installed
        caps.type_mapper = _PostgresTypes
        return caps
