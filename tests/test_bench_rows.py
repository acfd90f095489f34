"""The bench's `rows` (rows/s targets are about rows loaded into DuckDB) are the rows the destination kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from pipedrive_source.emulator import EmulatorHandle, run_emulator

WORKER = Path(__file__).resolve().parent.parent / "bench" / "sync_worker.py"


def bench_sync(emulator: EmulatorHandle, workdir: Path) -> dict:
    command = [sys.executable, str(WORKER), "--base-url", emulator.base_url, "--workdir", str(workdir)]
    command += ["--entities", "deals,deal_products"]
    env = {**os.environ, "BENCH_API_TOKEN": emulator.api_token, "RUNTIME__DLTHUB_TELEMETRY": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_of_last_load(path: Path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        load_id = con.execute("SELECT max(load_id) FROM pipedrive._dlt_loads").fetchone()[0]
        tables = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'pipedrive' AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\'"
            ).fetchall()
        ]
        query = "SELECT count(*) FROM pipedrive.{} WHERE _dlt_load_id = ?"
        counts = {t: con.execute(query.format(t), [load_id]).fetchone()[0] for t in tables}
    return {table: rows for table, rows in counts.items() if rows}


def test_bench_rows_are_the_rows_loaded_into_duckdb(tmp_path: Path) -> None:
    """A deal that lost its last product writes a row that only clears its old products: written, not kept."""
    with run_emulator(seed=11, scale="tiny") as emulator:
        first = bench_sync(emulator, tmp_path)
        assert first["tables"] == rows_of_last_load(tmp_path / "bench.duckdb")
        by_deal: dict[int, list[int]] = {}
        for row in emulator.control.snapshot("deal_products"):
            by_deal.setdefault(row["deal_id"], []).append(row["id"])
        with duckdb.connect(str(tmp_path / "bench.duckdb"), read_only=True) as con:
            query = "SELECT DISTINCT deal_id FROM pipedrive.deal_products"
            loaded_deals = {deal for (deal,) in con.execute(query).fetchall()}
        single = next(ids[0] for deal, ids in by_deal.items() if len(ids) == 1 and deal in loaded_deals)
        emulator.control.mutate(ops=[{"op": "delete", "table": "deal_products", "id": single}])
        second = bench_sync(emulator, tmp_path)
    loaded = rows_of_last_load(tmp_path / "bench.duckdb")
    assert second["tables"] == loaded and second["rows"] == sum(loaded.values())
    assert second["rows_written"] > second["rows"]  # the placeholder the load dropped
