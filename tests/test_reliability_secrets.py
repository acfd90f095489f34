"""Secrets: after everything above, no token appears in any log line, script output, exception text, dlt
trace, pipeline state, load package or destination table.

Every reliability module registers what it produced in `reliability_support.LEDGER` (tokens it used, log
records at DEBUG, script output, exception texts, work directories). This module runs last (file order),
adds the riskiest runs of its own (OAuth with a refresh mid-run, failing runs with debug logging, a run
SIGKILLed mid-load) so it proves something when run alone too, then scans the lot: raw bytes, gzip members,
parquet values, DuckDB table values and dlt's compressed state rows.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import duckdb
import pytest
from connector_fixtures import make_pipeline, sync
from reliability_support import (
    EXACT,
    LEDGER,
    AtPage,
    Script,
    files_in,
    ledger_logs,  # noqa: F401
    path_leaks,
    pipeline_trace_text,
    run_main,
    secret_emulator,
)

from pipedrive_source import PipedriveOAuthCredentials

pytestmark = pytest.mark.usefixtures("ledger_logs")
TABLES = ["deals", "deal_products", "persons", "notes", "users"]


def test_the_scanner_finds_a_token_in_every_form(tmp_path: Path) -> None:
    """The scan is only worth something if it can fail: plant a token in each form it reads."""
    token = "pd-planted-" + "0123456789abcdef" * 2
    (tmp_path / "plain.txt").write_text(f"x {token} y")
    (tmp_path / "packed.jsonl.gz").write_bytes(gzip.compress(json.dumps({"t": token}).encode() * 50))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"t": [token] * 100}), tmp_path / "col.parquet", compression="zstd")
    with duckdb.connect(str(tmp_path / "db.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT ? || i::VARCHAR AS v FROM range(5000) r(i)", [token])
    found = {Path(line.split(":")[0]).name for line in path_leaks([token], tmp_path)}
    assert found >= {"plain.txt", "packed.jsonl.gz", "col.parquet", "db.duckdb"}, found


def test_oauth_run_with_a_refresh_mid_run_and_debug_logs(tmp_path: Path) -> None:
    secrets = {name: LEDGER.secret(name) for name in ("client", "refresh")}
    with secret_emulator(
        oauth_client_secret=secrets["client"], oauth_refresh_token=secrets["refresh"]
    ) as emu:
        credentials = PipedriveOAuthCredentials()
        credentials.client_id = emu.settings.oauth_client_id
        credentials.client_secret = secrets["client"]
        credentials.refresh_token = secrets["refresh"]
        credentials.token_url = f"{emu.base_url}/oauth/token"
        expire = AtPage("deals", 1, lambda pages: emu.control.expire_oauth())
        emu.control.settings(error_rate=0.2)
        result = sync(
            emu,
            tmp_path,
            api_token=None,
            oauth=credentials,
            entities=TABLES,
            page_size=10,
            record_hooks=[expire],
            **EXACT,
        )
        assert expire.fired and result.emulator_stats["statuses"].get("401", 0) >= 1  # refreshed mid-run
        LEDGER.secrets.update(emu.app.oauth._tokens)  # every access token the emulator issued
        LEDGER.path(tmp_path)
        LEDGER.text("trace", pipeline_trace_text(result.pipeline))
        LEDGER.text("state", json.dumps(make_pipeline(tmp_path).state, default=str))


def test_failing_runs_leave_no_token(tmp_path: Path, monkeypatch, capsys) -> None:
    with secret_emulator() as emu:
        wrong = LEDGER.secret("wrong")
        run = run_main(monkeypatch, capsys, emu, tmp_path / "wrong", "--verbose", token=wrong)
        assert run.returncode == 2
        emu.control.settings(error_rate=1.0)
        run = run_main(monkeypatch, capsys, emu, tmp_path / "down", "--verbose", "--entities", "users")
        assert run.returncode == 1
        emu.control.settings(error_rate=0.0)
        with pytest.raises(Exception) as failure:
            sync(emu, tmp_path / "lib", api_token=wrong, entities=["users"])
        LEDGER.error("library error", failure.value)
        LEDGER.text("trace", pipeline_trace_text(make_pipeline(tmp_path / "lib")))


def test_a_run_killed_mid_load_leaves_no_token(tmp_path: Path) -> None:
    with secret_emulator() as emu:
        script = Script(emu, tmp_path, LOAD__WORKERS="1")
        run = script.run_until(
            files_in(script.pipelines_dir, "*/load/normalized/*/completed_jobs/*"),
            "--entities",
            ",".join(TABLES),
        )
        assert run.killed  # load packages stay on disk, half loaded: they are scanned below


def test_no_token_anywhere() -> None:
    assert LEDGER.secrets and LEDGER.paths and LEDGER.texts
    leaks = LEDGER.leaks()
    assert not leaks, leaks[:10]
