"""The end-of-run summary's total says what its rows are: loaded (counted in the destination) or written
(as the run wrote them, which a merge may keep fewer of). Postgres's said "written into" the dataset, and
DuckDB's said "loaded" where its count had failed and fell back to the rows written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from connector_fixtures import DATASET, sync  # noqa: E402
from reliability_support import script_module  # noqa: E402
from test_connector_postgres import FORMAT, _pg_pipeline, postgres  # noqa: E402, F401 (postgres: a fixture)

from pipedrive_source.emulator import EmulatorHandle  # noqa: E402

ENTITIES = ["deals", "persons"]


def summary(result: Any, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    script_module().print_summary(result.pipeline, result.monitor, result.flagged, 1.0)
    return capsys.readouterr().out


def test_duckdb_counts_rows_loaded_and_says_written_when_its_count_fails(
    emulator: EmulatorHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    result = sync(emulator, tmp_path, entities=ENTITIES)
    written = sum(result.loaded.values())
    assert f"total: {written:,} rows loaded into {DATASET}" in summary(result, capsys)
    # a table the run loaded gone before the count (dropped by hand): the count fails, a real failure
    with duckdb.connect(str(tmp_path / "crm.duckdb")) as con:
        con.execute(f"DROP TABLE {DATASET}.persons__emails")
    said = summary(result, capsys)
    assert "rows counted as written, not as loaded" in caplog.text
    assert "rows loaded" not in said and "more rows written than loaded" not in said
    assert f"total: {written:,} rows written for {DATASET}" in said
    assert "not counted in the destination" in said


def test_postgres_says_its_rows_are_those_written(
    emulator: EmulatorHandle,
    postgres: str,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Counting them in Postgres reads the load id of every row of each table loaded (no index): the rows
    written, named as such, not "written into" the dataset, which its merge may keep fewer of."""
    result = sync(
        emulator,
        tmp_path,
        pipeline=_pg_pipeline(tmp_path, postgres),
        loader_file_format=FORMAT,
        entities=ENTITIES,
    )
    said = summary(result, capsys)
    assert f"total: {sum(result.loaded.values()):,} rows written for {DATASET} (" in said
    assert "written into" not in said and "rows loaded" not in said
    assert "not counted in the destination, whose merge may keep fewer" in said
