"""The connector into PostgreSQL as the pipeline script loads it (`postgres_load.postgres()`, parquet files
by COPY): a real server (Debian's postgresql package) for this module.

The synced tables are copied from Postgres into a DuckDB file and compared row by row with the emulator's
snapshot by the same code as the DuckDB tests; values of every awkward kind are compared with what dlt's own
`insert_values` load makes of them. Skipped only where no PostgreSQL server binaries are installed.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from connector_fixtures import (
    DATASET,
    assert_history_is,
    compare,
    connections_of_extract,
    load_truth,
    make_pipeline,
    merge_pair,
    sync,
    synced_rows,
)
from reliability_support import assert_read_twice_keeps_one_current_version
from test_custom_fields_sync import check_unlisted_field_moves
from test_reliability_bad_input import NON_FINITE_TABLES, inject_non_finite, non_finite_problems

from pipedrive_source import pipedrive_source
from pipedrive_source.deployment import Company
from pipedrive_source.destinations import loader_file_format
from pipedrive_source.emulator import run_emulator
from pipedrive_source.emulator.faults import RAW_JSON
from pipedrive_source.history import add_history
from pipedrive_source.loaded import counts_loaded, loaded_rows
from pipedrive_source.postgres_load import postgres as postgres_destination
from pipedrive_source.recovery import recover
from pipedrive_source.views import refresh_views

FORMAT = loader_file_format(postgres_destination())  # as the pipeline script picks it
TABLES = ["deals", "persons", "organizations", "users", "currencies"]


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))), None)
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    """Postgres refuses to run as root (CI runs as root): run it as the package's `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server installed (Debian: apt-get install postgresql)")
    # not under pytest's tmp dir: that is private to root, and the server runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="pipedrive-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        root.chmod(0o755)
        shutil.chown(data, "postgres")
    ctl = str(bin_dir / "pg_ctl")
    options = f"-p {_free_port()} -k {data} -h 127.0.0.1 -c fsync=off -c full_page_writes=off"
    _server(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust")
    _server(ctl, "-D", str(data), "-o", options, "-w", "-l", str(data / "server.log"), "start")
    try:  # trust auth: dlt insists on a password, the server ignores it
        yield f"postgresql://postgres:unused@127.0.0.1:{options.split()[1]}/postgres"
    finally:
        subprocess.run(
            _as_server_user([ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


def _server(*command: str) -> None:
    done = subprocess.run(_as_server_user(list(command)), capture_output=True, text=True)
    assert done.returncode == 0, f"{command[0]} failed: {done.stdout}{done.stderr}"


def _copy_to_duckdb(pipeline: dlt.Pipeline, path: Path) -> None:
    """Every data table of the sync, from Postgres into `path` (schema `pipedrive`), for the comparison."""
    path.unlink(missing_ok=True)
    dataset = pipeline.dataset()
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE SCHEMA {DATASET}")
        for table in pipeline.default_schema.data_table_names():
            frame = dataset[table].arrow()  # noqa: F841 (read by DuckDB's replacement scan below)
            con.execute(f'CREATE TABLE {DATASET}."{table}" AS SELECT * FROM frame')


def postgres_reader(credentials: str, folder: Path) -> dlt.Pipeline:
    """A pipeline of its own (its working folder in `folder`) that reads the `pipedrive` dataset."""
    return dlt.pipeline(
        "reader",
        destination=postgres_destination(credentials),
        dataset_name="pipedrive",
        pipelines_dir=str(folder),
    )


def _pg_pipeline(tmp_path: Path, credentials: str) -> dlt.Pipeline:
    return make_pipeline(tmp_path, destination=postgres_destination(credentials), name="pg")


def _assert_equal(emulator: Any, tmp_path: Path, pipeline: dlt.Pipeline) -> None:
    _copy_to_duckdb(pipeline, tmp_path / "crm.duckdb")
    truth = load_truth(emulator, tmp_path, TABLES)
    problems = {t: p[:5] for t in TABLES if (p := compare(tmp_path / "crm.duckdb", truth, t))}
    assert not problems


def test_full_then_incremental_sync_into_postgres(emulator: Any, postgres: str, tmp_path: Path) -> None:
    pipeline = _pg_pipeline(tmp_path, postgres)
    first = sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=TABLES)
    assert first.loaded["deals"] == len(emulator.control.snapshot("deals"))
    # not counted in Postgres (a scan of every table loaded, each run): the rows written, which a first
    # sync of these tables keeps one for one
    assert not counts_loaded(pipeline.destination)
    assert loaded_rows(pipeline) == first.loaded
    assert first.loaded["persons__emails"] > 0  # child tables too
    _assert_equal(emulator, tmp_path, pipeline)

    emulator.control.mutate(seed=31, creates=6, updates=20, deletes=5, archives=3)
    second = sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=TABLES)
    assert 0 < second.rows < first.rows
    _assert_equal(emulator, tmp_path, pipeline)

    third = sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=TABLES)
    assert third.loaded == {}


def test_a_reconcile_compares_every_entity_through_one_postgres_connection(
    emulator: Any, postgres: str, tmp_path: Path
) -> None:
    pipeline = _pg_pipeline(tmp_path, postgres)
    sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=TABLES)
    options: dict[str, Any] = {"loader_file_format": FORMAT, "entities": TABLES}
    incremental, _ = connections_of_extract(emulator, pipeline, **options)
    reconcile, left_open = connections_of_extract(emulator, pipeline, reconcile=True, **options)
    assert reconcile - incremental == 1  # deals and persons compared
    assert left_open == 0


def test_column_types_in_postgres(emulator: Any, postgres: str, tmp_path: Path) -> None:
    pipeline = _pg_pipeline(tmp_path, postgres)
    sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=["deals", "deal_flow"])
    with pipeline.sql_client() as client:
        rows = client.execute_sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'deals'",
            DATASET,
        )
    types = dict(rows)
    assert types["id"] == "bigint"
    assert types["value"] == "double precision"
    assert types["add_time"] == "timestamp with time zone"
    assert types["is_deleted"] == "boolean"
    assert not [c for c in types if "__v_" in c]  # no variant columns
    with pipeline.sql_client() as client:
        [(flow_json,)] = client.execute_sql(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'deal_flow' AND column_name = 'item_data'",
            DATASET,
        )
    assert flow_json == "jsonb"  # as dlt's insert_values load makes it (dlt's parquet load: json)


SET_FIELD = "Which product lines is the customer interested in for the next fiscal year?"
LONG_FIELDS = {  # Pipedrive allows 255 characters, Postgres identifiers 63; a value for each
    "How did you first hear about our company? (marketing attribution source, first touch)": (
        "varchar",
        "Trade fair",
    ),
    "Expected annual recurring revenue after the renewal of the contract": (
        "monetary",
        {"value": 1250.5, "currency": "EUR"},
    ),
    SET_FIELD: ("set", None),  # every option, once the field exists
    "Billing address of the customer's headquarters": ("address", {"value": "Main st 1, Porto"}),  # the
    # name fits, `<name>_admin_area_level_1` does not
}


def test_custom_fields_with_names_longer_than_postgres_identifiers(postgres: str, tmp_path: Path) -> None:
    """A long field name is shortened by dlt in Postgres: the sync failed in its extract (the hinted
    full name and the data's shortened one collided); `custom_fields` named a column that does not exist,
    and a set field's child table by its column's name, shortened alone, where dlt shortens the table's
    whole name (`deals__<column>` was no table)."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        ops = [
            {"op": "add_field", "entity": "deal", "name": name, "field_type": kind, "options": ["A", "B"]}
            for name, (kind, _) in LONG_FIELDS.items()
        ]
        added = {f["name"]: f["field_code"] for f in emulator.control.mutate(ops=ops)["fields"]}
        options = {
            o["id"]: o["label"]
            for f in emulator.control.snapshot("deal_fields")
            if f["field_code"] == added[SET_FIELD]
            for o in f["options"]
        }
        values = {added[name]: value for name, (_, value) in LONG_FIELDS.items()}
        values[added[SET_FIELD]] = sorted(options)
        changes = {"custom_fields": values}
        deal_ids = [d["id"] for d in emulator.control.snapshot("deals")][:6]
        emulator.control.mutate(
            ops=[{"op": "update", "table": "deals", "id": i, "changes": changes} for i in deal_ids]
        )
        pipeline = _pg_pipeline(tmp_path, postgres)
        sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=["deals"])
        truth = {d["id"]: d["custom_fields"] for d in emulator.control.snapshot("deals")}

    child = next(t for t in pipeline.default_schema.data_table_names() if t.startswith("deals__which"))
    with pipeline.sql_client() as client:
        described = client.execute_sql(
            "SELECT field_code, column_name, columns FROM custom_fields WHERE entity = 'deals'"
        )
        existing = {
            name
            for (name,) in client.execute_sql(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'deals'",
                DATASET,
            )
        }
        rows = {row["id"]: row for row in _dicts(client, "SELECT * FROM deals")}
        labels = client.execute_sql(
            f"SELECT p.id, c.value FROM {child} c JOIN deals p ON c._dlt_parent_id = p._dlt_id "
            "ORDER BY p.id, c._dlt_list_idx"
        )
    columns = {code: (column, listed.split(", ")) for code, column, listed in described}
    for name, (kind, _) in LONG_FIELDS.items():
        code = added[name]
        column, listed = columns[code]
        if kind == "set":  # no column: a child table, named apart from `deals__<column>` when shortened
            assert listed == [child], (name, listed)
            continue
        assert set(listed) <= existing, (name, listed)  # the table names the columns there are
        for deal_id, custom in truth.items():
            value = custom.get(code)
            if kind == "monetary":
                currency = next(c for c in listed if c.endswith("_currency"))
                want = (None, None) if value is None else (value["value"], value["currency"])
                assert (rows[deal_id][column], rows[deal_id][currency]) == want
            elif kind == "address":
                assert rows[deal_id][column] == (value or {}).get("value")
            else:
                assert rows[deal_id][column] == value
    want = [(i, options[o]) for i in sorted(truth) for o in truth[i].get(added[SET_FIELD]) or ()]
    assert [tuple(pair) for pair in labels] == want


def _dicts(client: Any, sql: str) -> list[dict[str, Any]]:
    with client.execute_query(sql) as cursor:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


SCRIPT = Path(__file__).resolve().parent.parent / "pipelines" / "pipedrive_pipeline.py"
VIEW_TABLES = "deals,pipelines,stages,users,persons,organizations"
SOME_VIEWS = "views: v_deals, v_open_pipeline_by_stage, v_deals_won_lost_by_month"


def _run_script(
    emulator: Any, postgres: str, workdir: Path, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The pipeline script into Postgres dataset `refreshed`, its pipelines folder (the machine's local
    state) in `workdir`."""
    env = {
        **os.environ,
        "SOURCES__PIPEDRIVE__API_TOKEN": token or emulator.api_token,
        "SOURCES__PIPEDRIVE__BASE_URL": emulator.base_url,
        "DESTINATION__POSTGRES__CREDENTIALS": postgres,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_PROJECT_DIR": str(workdir),
    }
    workdir.mkdir(exist_ok=True)
    command = [sys.executable, str(SCRIPT), "--destination", "postgres", "--quiet", *args]
    command += ["--pipelines-dir", str(workdir / "pipelines"), "--dataset", "refreshed"]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=workdir, timeout=600)


def _view_deals(postgres: str, tmp_path: Path) -> set[int]:
    destination = dlt.destinations.postgres(credentials=postgres)
    pipeline = dlt.pipeline(
        "check", str(tmp_path / "check"), destination=destination, dataset_name="refreshed"
    )
    with pipeline.sql_client() as client:
        return {row[0] for row in client.execute_sql("SELECT deal_id FROM v_deals")}


def test_full_refresh_of_a_dataset_with_views_into_postgres(
    emulator: Any, postgres: str, tmp_path: Path
) -> None:
    """The script's `--full-refresh` drops tables; Postgres refuses while a view reads them ("cannot drop
    table deals because other objects depend on it"), so the run failed and its package stayed stuck.
    The views were dropped before the run knew whether it would load: a full refresh the company check
    refused (exit 2) left them dropped; and on a machine without the pipeline's local state nothing was
    dropped, so the load failed."""
    first = _run_script(emulator, postgres, tmp_path, "--entities", VIEW_TABLES)
    assert first.returncode == 0, first.stderr
    assert SOME_VIEWS in first.stdout
    live = {deal["id"] for deal in emulator.control.snapshot("deals") if not deal["is_deleted"]}
    assert _view_deals(postgres, tmp_path) == live

    other = emulator.settings.other_company_token
    refused = _run_script(emulator, postgres, tmp_path, "--entities", "deals", "--full-refresh", token=other)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "the credentials belong to the company" in refused.stderr
    assert _view_deals(postgres, tmp_path) == live  # a refused run changes nothing

    again = _run_script(emulator, postgres, tmp_path, "--entities", "deals", "--full-refresh")
    assert again.returncode == 0, again.stderr
    assert SOME_VIEWS in again.stdout
    assert _view_deals(postgres, tmp_path) == live

    fresh = _run_script(emulator, postgres, tmp_path / "fresh", "--entities", VIEW_TABLES, "--full-refresh")
    assert fresh.returncode == 0, fresh.stderr
    assert SOME_VIEWS in fresh.stdout
    assert _view_deals(postgres, tmp_path) == live


def test_a_pending_full_refresh_loads_under_views_into_postgres(
    emulator: Any, postgres: str, tmp_path: Path
) -> None:
    """A full refresh whose load did not happen (killed, or refused by a view of an earlier version) left a
    package that drops tables: the next run's `recover` loaded it under the views and failed again."""
    pipeline = _pg_pipeline(tmp_path, postgres)
    sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=VIEW_TABLES.split(","))
    assert "v_deals" in refresh_views(pipeline).created
    source = pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, entities=["deals"])
    pipeline.extract(source, refresh="drop_resources", loader_file_format=FORMAT)
    pipeline.normalize()

    assert recover(pipeline)  # loaded, not refused
    assert "v_deals" in refresh_views(pipeline).created
    with pipeline.sql_client() as client:
        [(count,)] = client.execute_sql("SELECT count(*) FROM v_deals")
    assert count == sum(not deal["is_deleted"] for deal in emulator.control.snapshot("deals"))


def test_nul_characters_in_text_and_json_values(postgres: str, tmp_path: Path) -> None:
    """Postgres stores NUL in neither text nor JSON: a note with one (in its deal's flow, a JSON column)
    failed the load with `UntranslatableCharacter: unsupported Unicode escape sequence`, for good (the
    package stayed pending). The character is dropped; a backslash written before `u0000` is text, kept."""
    text, in_json = _note_content_loaded(
        _pg_pipeline(tmp_path, postgres), tmp_path, "before\x00after \\u0000 kept"
    )
    assert text == in_json == "beforeafter \\u0000 kept"


def _note_content_loaded(pipeline: dlt.Pipeline, tmp_path: Path, content: str) -> tuple[str, str]:
    """A note (on a deal) given `content`, synced with its deal's flow into `pipeline`: the note's `content`
    column and its flow item's `item_data` (JSON) `content`, as Postgres holds them."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        note = next(n for n in emulator.control.snapshot("notes") if n.get("deal_id") and n["active_flag"])
        emulator.control.mutate(
            ops=[
                {"op": "update", "table": "notes", "id": note["id"], "changes": {"content": content}},
                {"op": "update", "table": "deals", "id": note["deal_id"], "changes": {}},  # its flow again
            ]
        )
        tables = ["deals", "deal_flow", "notes"]
        sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=tables)
    with pipeline.sql_client() as client:
        [(text,)] = client.execute_sql("SELECT content FROM notes WHERE id = %s", note["id"])
        [(data,)] = client.execute_sql(
            "SELECT item_data FROM deal_flow WHERE flow_id = %s", f"note:{note['id']}"
        )
    return text, data["content"]


def test_lone_surrogates_and_control_characters_in_text_and_json_values(
    postgres: str, tmp_path: Path
) -> None:
    """A lone surrogate escape in a page (`"\\ud800"`, as Pipedrive echoes it from text a user entered)
    failed every run; it arrives as U+FFFD in a text column and inside a JSON one (jsonb), through Arrow
    and the parquet file COPY loads, a pair next to it as its character, control characters as they are."""
    controls = "\\u0001\\u001b\\u001f\\u007f\\u0085\\u009f\\u2028\\ufeff\\t\\r\\n"
    content = RAW_JSON + f'"a\\ud800b \\ud83d\\ude00 \\udfff {controls}"'
    pipeline = dlt.pipeline(  # a dataset of its own: a first sync reads the deal's whole flow
        pipeline_name="pg_surrogates",
        destination=postgres_destination(postgres),
        dataset_name="surrogates",
        pipelines_dir=str(tmp_path / "surrogates"),
    )
    text, in_json = _note_content_loaded(pipeline, tmp_path, content)
    assert text == in_json == "a\ufffdb \U0001f600 \ufffd \x01\x1b\x1f\x7f\x85\x9f\u2028\ufeff\t\r\n"


def test_non_finite_numbers_into_postgres(postgres: str, tmp_path: Path) -> None:
    """Postgres takes NaN and Infinity in a double precision column as DuckDB does, and `SUM(value)` over
    the deals was NaN: the typed columns are NULL there and the texts in `__v_text`, on an incremental run
    and on a first sync (a dataset of its own)."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        pipeline = _pg_pipeline(tmp_path, postgres)
        sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=NON_FINITE_TABLES)
        texts = inject_non_finite(emulator)
        sync(emulator, tmp_path, pipeline=pipeline, loader_file_format=FORMAT, entities=NON_FINITE_TABLES)
        first = dlt.pipeline(
            pipeline_name="pg_first",
            destination=postgres_destination(postgres),
            dataset_name="first_sync",
            pipelines_dir=str(tmp_path / "first"),
        )
        sync(emulator, tmp_path, pipeline=first, loader_file_format=FORMAT, entities=NON_FINITE_TABLES)
    for synced in (pipeline, first):
        with synced.sql_client() as client:
            [(total,)] = client.execute_sql("SELECT sum(value) FROM deals")
        assert math.isfinite(total)
        _copy_to_duckdb(synced, tmp_path / "copy.duckdb")
        assert non_finite_problems(tmp_path / "copy.duckdb", texts) == []


def test_history_into_postgres(emulator: Any, postgres: str, tmp_path: Path) -> None:
    """SCD2 history on Postgres, compared with the emulator's records after each run: a first sync in
    overlapping v1 pages (notes), changes, a run without changes (no version added). A dataset of its own:
    the other tests loaded deals without history into the server's `pipedrive`."""
    pipeline = dlt.pipeline(
        "pg_history",
        destination=postgres_destination(postgres),
        dataset_name="history",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    tables = ["deals", "persons", "notes"]

    def run() -> None:
        source = pipedrive_source(
            api_token=emulator.api_token, base_url=emulator.base_url, entities=tables, page_size=5
        )
        add_history(source, tables, pipeline)
        pipeline.run(source, loader_file_format=FORMAT)

    run()
    assert_history_is(emulator, pipeline, tables)
    emulator.control.mutate(seed=41, creates=4, updates=25)
    run()
    assert_history_is(emulator, pipeline, tables)
    versions = {table: len(synced_rows(pipeline, f"{table}_history")) for table in tables}
    run()
    assert {table: len(synced_rows(pipeline, f"{table}_history")) for table in tables} == versions


def test_a_record_read_twice_has_one_current_version_in_postgres(postgres: str, tmp_path: Path) -> None:
    pipeline = dlt.pipeline(
        "pg_read_twice",
        destination=postgres_destination(postgres),
        dataset_name="read_twice",
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    assert_read_twice_keeps_one_current_version(pipeline)


AWKWARD_TEXTS = [
    None,
    "",
    " ",
    "\\.",  # COPY's end of data, on a line of its own
    'a "quoted", comma\nnew line\r\nreturn\\back slash\ttab',
    "NULL",
    "\\N",
    "é ✓ 😀 ß",
    "\\u0000 kept",
]


def _awkward_columns() -> dict[str, list[Any]]:
    n = len(AWKWARD_TEXTS)
    return {
        "id": list(range(n)),
        "text": AWKWARD_TEXTS,
        "doubles": [0.1, 1 / 3, 1e308, 5e-324, -0.0, 2.0**60, None, 123456.789, -1.5][:n],
        "big": [2**63 - 1, -(2**63), 2**53 + 1, 0, None, 1, -1, 10**18, 7][:n],
        "flag": [True, False, None] * (n // 3),
        "at": [
            datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
            None,
        ]
        * (n // 3),
        "day": [date(2024, 2, 29), None, date(1, 1, 1)] * (n // 3),
        "amount": [Decimal("1.500000000"), Decimal("-99999999999999.123456789"), None] * (n // 3),
        "raw": [b'\x00\xff\\,"\n', b"", None] * (n // 3),
        "doc": [{"a": "", "b": None, "c": 'x"\n\\'}, [], None, "", {"é": [1.5, True]}, 0, {}, "x", None],
    }


AWKWARD_HINTS: dict[str, Any] = {
    "doc": {"data_type": "json"},
    "amount": {"data_type": "decimal", "precision": 38, "scale": 9},
    "raw": {"data_type": "binary"},
    "at": {"data_type": "timestamp"},
}


def _awkward_resources() -> list[Any]:
    import pyarrow as pa

    columns = _awkward_columns()
    types = {
        "amount": pa.decimal128(38, 9),
        "raw": pa.binary(),
        "at": pa.timestamp("us", tz="UTC"),
        "doc": pa.string(),
    }
    arrays = {
        name: pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
        if name == "doc"
        else pa.array(values, types.get(name))
        for name, values in columns.items()
    }
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    options = {"write_disposition": "merge", "primary_key": "id", "columns": AWKWARD_HINTS}
    return [
        dlt.resource([pa.table(arrays)], name="from_arrow", **options),
        dlt.resource(rows, name="from_dicts", **options),
    ]


def _dataset_rows(pipeline: dlt.Pipeline) -> dict[str, list[Any]]:
    """Every data table's rows as sorted (column, value) pairs, in one order; not their load ids, nor their
    `_dlt_id`, which dlt's JSON path draws at random for each row (`custom_fields`; `_dlt_parent_id` and
    `_dlt_root_id` are compared)."""
    ignore = ("_dlt_load_id", "_dlt_id")
    out = {}
    with pipeline.sql_client() as client:
        for table in sorted(pipeline.default_schema.data_table_names()):
            with client.execute_query(f"SELECT * FROM {table}") as cursor:
                names = [d[0] for d in cursor.description]
                rows = [
                    sorted((n, _plain(v)) for n, v in zip(names, row, strict=True) if n not in ignore)
                    for row in cursor.fetchall()
                ]
            out[table] = sorted(rows, key=repr)
    return out


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


def test_values_of_every_kind_load_as_they_are(postgres: str, tmp_path: Path) -> None:
    """dlt's CSV load into Postgres names every nullable column in FORCE_NULL: an empty string came back as
    NULL, so the connector loaded Postgres from insert_values files (normalized from its Arrow tables back
    into Python rows: 4.5 s of a small sync's 7.4 s load). Parquet by COPY keeps every value, from Arrow
    tables and from dicts (dlt's JSON path), exactly as dlt's insert_values load does."""
    exact = dlt.pipeline(
        "exact", str(tmp_path / "p"), destination=postgres_destination(postgres), dataset_name="kinds_exact"
    )
    insert = dlt.pipeline(
        "insert",
        str(tmp_path / "p"),
        destination=dlt.destinations.postgres(credentials=postgres),
        dataset_name="kinds_insert",
    )
    assert loader_file_format(exact.destination) == "parquet"
    assert loader_file_format(insert.destination) == "insert_values"
    for pipeline in (exact, insert):
        info = pipeline.run(_awkward_resources(), loader_file_format=loader_file_format(pipeline.destination))
        jobs = [j.job_file_info for p in info.load_packages for j in p.jobs["completed_jobs"]]
        formats = {
            j.table_name: j.file_format for j in jobs if j.file_format != "sql" and j.table_name[0] != "_"
        }
        assert set(formats.values()) == {loader_file_format(pipeline.destination)}

    columns = _awkward_columns()
    with exact.sql_client() as client:
        for table in ("from_arrow", "from_dicts"):
            loaded = client.execute_sql(f"SELECT id, text, doc, raw, amount, at, big, doubles FROM {table}")
            by_id = {row[0]: row for row in loaded}
            for i in columns["id"]:
                _, text, doc, raw, amount, at, big, doubles = by_id[i]
                assert text == columns["text"][i], (table, i)
                assert (amount, at, big) == (columns["amount"][i], columns["at"][i], columns["big"][i])
                assert str(doubles) == str(columns["doubles"][i]), (table, i)  # -0.0 too
                if table == "from_arrow":  # dlt's JSON path makes "" in a JSON column and b"" variants
                    assert doc == columns["doc"][i], (table, i)
                    assert _plain(raw) == columns["raw"][i], (table, i)
    assert _dataset_rows(exact) == _dataset_rows(insert)


def test_a_sync_of_awkward_values_loads_as_with_insert_values(postgres: str, tmp_path: Path) -> None:
    """The connector's tables (Arrow tables, and dlt's JSON path for a page with a variant) into Postgres by
    parquet and COPY, then an incremental run with hard deletes and reconcile: every row and value as dlt's
    insert_values load has them, and the awkward texts as the emulator serves them."""
    tables = ["deals", "deal_flow", "notes", "persons"]
    with run_emulator(seed=7, scale="tiny") as emulator:
        deals = [d["id"] for d in emulator.control.snapshot("deals")]
        persons = [p["id"] for p in emulator.control.snapshot("persons")]
        note = next(n for n in emulator.control.snapshot("notes") if n.get("deal_id") and n["active_flag"])
        texts = [t for t in AWKWARD_TEXTS if t is not None]
        ops = [
            {
                "op": "update",
                "table": "deals",
                "id": deals[i],
                "changes": {"title": text, "lost_reason": text},
            }
            for i, text in enumerate(texts)
        ]
        ops += [
            {"op": "update", "table": "deals", "id": deals[-1], "changes": {"value": "not a number"}},
            {"op": "update", "table": "persons", "id": persons[0], "changes": {"job_title": ""}},
            {"op": "update", "table": "notes", "id": note["id"], "changes": {"content": texts[3]}},
            {"op": "update", "table": "deals", "id": note["deal_id"], "changes": {}},  # its flow again
        ]
        emulator.control.mutate(ops=ops)
        destinations = {
            "exact": postgres_destination(postgres),
            "insert": dlt.destinations.postgres(postgres),
        }
        pipelines = {  # datasets of their own: the module's other tests load into `pipedrive`
            name: dlt.pipeline(name, str(tmp_path / "p"), destination=d, dataset_name=f"awkward_{name}")
            for name, d in destinations.items()
        }
        options = {"entities": tables, "hard_delete": True, "reconcile": True}

        def sync_both() -> None:
            for name, pipeline in pipelines.items():
                fmt = loader_file_format(pipeline.destination)
                sync(emulator, tmp_path / name, pipeline=pipeline, loader_file_format=fmt, **options)

        sync_both()
        truth = {d["id"]: d for d in emulator.control.snapshot("deals")}
        with pipelines["exact"].sql_client() as client:
            loaded = client.execute_sql("SELECT id, title, lost_reason FROM deals")
            types = dict(
                client.execute_sql(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'awkward_exact' AND table_name = 'deals'"
                )
            )
        assert {i: (t, r) for i, t, r in loaded} == {
            i: (d["title"], d["lost_reason"]) for i, d in truth.items() if not d["is_deleted"]
        }
        assert types["value__v_text"] == "character varying"  # the page went through dlt's JSON path
        assert _dataset_rows(pipelines["exact"]) == _dataset_rows(pipelines["insert"])

        emulator.control.mutate(seed=31, creates=6, updates=20, deletes=5, archives=3)
        sync_both()
        assert _dataset_rows(pipelines["exact"]) == _dataset_rows(pipelines["insert"])


NAMED_POSTGRES = {  # every way to name dlt's Postgres destination to the orchestrators (with credentials)
    "name": lambda url: "postgres",
    "type": lambda url: "dlt.destinations.postgres",
    "factory": lambda url: dlt.destinations.postgres,
    "object": lambda url: dlt.destinations.postgres(credentials=url),
    "named": lambda url: "warehouse",  # destination.warehouse.destination_type = "postgres"
}


@pytest.mark.parametrize("naming", NAMED_POSTGRES)
def test_orchestrated_pipelines_into_postgres_keep_empty_strings(
    naming: str, postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster and Airflow load the file format the pipeline script picks into the company's pipeline. Built
    for `"postgres"`, that was dlt's own destination, which (no ADBC driver) wrote the Arrow tables as CSV
    and loaded them with FORCE_NULL: an empty string arrived as NULL; `dlt.destinations.postgres(...)` and
    the other ways to name it still took that path."""
    import pyarrow as pa

    from pipedrive_source.deployment import company_pipeline

    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", postgres)
    monkeypatch.setenv("DESTINATION__WAREHOUSE__DESTINATION_TYPE", "postgres")
    monkeypatch.setenv("DESTINATION__WAREHOUSE__CREDENTIALS", postgres)
    destination = NAMED_POSTGRES[naming](postgres)
    pipeline = company_pipeline(Company("acme"), destination, str(tmp_path / "pipelines"))
    assert pipeline.destination.destination_name == ("warehouse" if naming == "named" else "postgres")
    rows = pa.table({"id": [1, 2, 3], "text": ["", None, "x"]})
    fmt = loader_file_format(pipeline.destination)  # as the orchestrators pick it
    pipeline.run(dlt.resource([rows], name="texts"), loader_file_format=fmt, dataset_name=f"texts_{naming}")
    with pipeline.sql_client() as client:
        assert client.execute_sql("SELECT id, text FROM texts ORDER BY id") == [(1, ""), (2, None), (3, "x")]
    jobs = [
        j.job_file_info
        for p in pipeline.last_trace.last_load_info.load_packages
        for j in p.jobs["completed_jobs"]
    ]
    assert {j.file_format for j in jobs if j.table_name == "texts"} == {"parquet"}  # the fast path, COPY


def test_dagster_into_a_postgres_destination_object_keeps_empty_strings(
    postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dlt.destinations.postgres(...)` handed to the Dagster definitions: the materialization loaded the
    persons by dlt's CSV path, and the job title emptied in Pipedrive arrived as NULL."""
    dg = pytest.importorskip("dagster", reason="Dagster is an optional extra: uv sync --extra dagster")
    dagster_dlt = pytest.importorskip("dagster_dlt", reason="dagster-dlt is in the dagster extra")
    spec = importlib.util.spec_from_file_location(
        "dagster_definitions", Path(__file__).resolve().parent.parent / "pipelines" / "dagster_definitions.py"
    )
    assert spec and spec.loader
    definitions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(definitions)
    with run_emulator(seed=7, scale="tiny") as emulator:
        person = emulator.control.snapshot("persons")[0]["id"]
        emulator.control.mutate(
            ops=[{"op": "update", "table": "persons", "id": person, "changes": {"job_title": ""}}]
        )
        monkeypatch.setenv("PIPEDRIVE_DAGSTER__SOURCES__PIPEDRIVE__API_TOKEN", emulator.api_token)
        monkeypatch.setenv("PIPEDRIVE_DAGSTER__SOURCES__PIPEDRIVE__BASE_URL", emulator.base_url)
        destination = dlt.destinations.postgres(credentials=postgres)
        assets = definitions.company_assets(
            Company("dagster"), destination=destination, pipelines_dir=str(tmp_path / "pipelines")
        )
        result = dg.materialize(
            assets,
            resources={"dlt": dagster_dlt.DagsterDltResource()},
            selection=[dg.AssetKey(["dagster", "persons"])],
            raise_on_error=False,
        )
    assert result.success
    pipeline = dlt.pipeline(
        "check",
        str(tmp_path / "check"),
        destination=postgres_destination(postgres),
        dataset_name="pipedrive_dagster",
    )
    with pipeline.sql_client() as client:
        assert client.execute_sql(f"SELECT job_title FROM persons WHERE id = {person}") == [("",)]


def test_a_field_unlisted_when_loaded_gets_its_typed_column_in_postgres(
    postgres: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As `test_custom_fields_sync`'s test of the same scenario, into Postgres (COPY of parquet files):
    the `cf_<8 chars>` column is varchar there too, and the field's own column double precision."""
    destination = postgres_destination(postgres)
    check_unlisted_field_moves(
        tmp_path,
        caplog,
        text="character varying",
        double="double precision",
        destination=destination,
        loader_file_format=loader_file_format(destination),
    )


def test_a_reconcile_into_postgres_compares_nothing_at_first_then_loads_what_a_merge_moved(
    emulator: Any, postgres: str, tmp_path: Path
) -> None:
    """The reconcile's comparison with the destination (`relinks.py`) in Postgres: a first run into an
    empty dataset has nothing to compare with and loads every record once; after a merge of persons, the
    next reconcile flags the person merged away and loads the deals the merge moved without stamping them,
    with their new person, as on DuckDB (`test_merges.py`)."""
    pipeline = dlt.pipeline(
        pipeline_name="pg_reconcile",
        destination=postgres_destination(postgres),
        dataset_name="pipedrive_reconciled",  # not the module's: empty before this test
        pipelines_dir=str(tmp_path / "pipelines"),
    )
    options: dict[str, Any] = {"loader_file_format": FORMAT, "entities": ["persons", "deals"]}
    first = sync(emulator, tmp_path, pipeline=pipeline, reconcile=True, **options)
    assert first.loaded["deals"] == len(emulator.control.snapshot("deals"))
    assert first.flagged == {}
    person, kept = merge_pair(emulator, "persons", "person_id", "deals")
    merged = emulator.control.mutate(
        ops=[{"op": "merge", "table": "persons", "id": person, "merge_with_id": kept}]
    )
    moved = {int(deal) for deal in merged["relinked"]["deals"]}
    assert moved

    second = sync(emulator, tmp_path, pipeline=pipeline, reconcile=True, **options)

    assert second.flagged == {"persons": 1}
    deals = {row["id"]: row for row in synced_rows(pipeline, "deals")}
    assert {deal: deals[deal]["person_id"] for deal in moved} == dict.fromkeys(moved, kept)
