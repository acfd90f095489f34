"""`pipelines/pipedrive_pipeline.py` as a user runs it: config from the environment, exit codes, one-line
errors, nothing loaded and state unchanged after a failure, no secret anywhere on disk or in the output."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dlt
import duckdb
import pytest

from pipedrive_source.emulator import EmulatorHandle, run_emulator

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "pipelines" / "pipedrive_pipeline.py"
SECRET = f"pd-secret-{uuid.uuid4().hex}"  # distinctive, so a leak cannot hide behind a common word


@pytest.fixture(scope="module")
def secret_emulator() -> Iterator[EmulatorHandle]:
    with run_emulator(seed=7, scale="tiny", api_token=SECRET) as handle:
        yield handle


def run_cli(
    workdir: Path,
    emulator: EmulatorHandle,
    token: str,
    *args: str,
    cwd: Path | None = None,
    **extra_env: str,
) -> subprocess.CompletedProcess[str]:
    """The script with its pipelines in `workdir`, run in `workdir` into `workdir/crm.duckdb`; run in `cwd`
    instead, into its default DuckDB file (a relative path). `extra_env` wins."""
    env = cli_env(workdir, emulator, token, **extra_env)
    if cwd is not None and "DESTINATION__DUCKDB__CREDENTIALS" not in extra_env:
        del env["DESTINATION__DUCKDB__CREDENTIALS"]
    if cwd is not None and "DLT_PROJECT_DIR" not in extra_env:
        env["DLT_PROJECT_DIR"] = str(cwd)
    command = [sys.executable, str(SCRIPT), "--pipelines-dir", str(workdir / "pipelines"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=cwd or workdir, timeout=600)


def cli_env(workdir: Path, emulator: EmulatorHandle, token: str, **extra_env: str) -> dict[str, str]:
    return {
        **os.environ,
        "SOURCES__PIPEDRIVE__API_TOKEN": token,
        "SOURCES__PIPEDRIVE__BASE_URL": emulator.base_url,
        "DESTINATION__DUCKDB__CREDENTIALS": str(workdir / "crm.duckdb"),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_PROJECT_DIR": str(workdir),  # not this checkout's .dlt/ (a developer's secrets.toml)
        **extra_env,
    }


def signal_once_reading(
    command: list[str], env: dict[str, str], cwd: Path, signum: int
) -> subprocess.CompletedProcess[str]:
    """The script, sent `signum` as soon as it prints its first page of progress; its output once every
    holder of its pipes (a demo's emulator too) is gone."""
    run = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a test runner may ignore it
    )
    assert run.stdout is not None
    for line in run.stdout:
        if " page " in line:
            run.send_signal(signum)
            break
    out, err = run.communicate(timeout=300)
    return subprocess.CompletedProcess(command, run.returncode, out, err)


def data_tables(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    with duckdb.connect(str(path), read_only=True) as con:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'pipedrive'"
            ).fetchall()
        ]
        return {n: con.execute(f"SELECT count(*) FROM pipedrive.{n}").fetchone()[0] for n in names}


def state_files(workdir: Path) -> dict[str, bytes]:
    root = workdir / "pipelines" / "pipedrive"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.glob("state.json")}


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exactly one `error:` line, the last one (retry warnings may precede it), and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in errors[0]


def test_sync_then_wrong_token_fails_cleanly_and_changes_nothing(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    ok = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,persons,users")
    assert ok.returncode == 0, ok.stderr
    assert "total:" in ok.stdout and "requests" in ok.stdout and "tokens" in ok.stdout
    assert "cannot merge" not in ok.stdout  # DuckDB merges
    before_tables, before_state = data_tables(tmp_path / "crm.duckdb"), state_files(tmp_path)
    assert before_tables["deals"] > 0 and before_state

    secret_emulator.control.mutate(seed=5, updates=20)  # there would be something to load
    wrong = f"pd-wrong-{uuid.uuid4().hex}"
    failed = run_cli(tmp_path, secret_emulator, wrong, "--entities", "deals,persons,users")
    assert failed.returncode == 2
    assert_one_clear_line(failed, "rejected the API token", "SOURCES__PIPEDRIVE__API_TOKEN")
    assert data_tables(tmp_path / "crm.duckdb") == before_tables  # nothing loaded
    assert state_files(tmp_path) == before_state  # state unchanged

    assert_nowhere(tmp_path, [SECRET, wrong], ok.stdout + ok.stderr + failed.stdout + failed.stderr)

    again = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,persons,users")
    assert again.returncode == 0, again.stderr  # the next good run simply continues
    assert data_tables(tmp_path / "crm.duckdb")["deals"] == before_tables["deals"]


def test_a_lapsed_subscription_or_every_table_refused_fails_with_one_line(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """A lapsed subscription answers 402 everywhere: the run skipped every table with a warning and exited
    0, so cron and schedulers saw a good sync that loaded nothing. A selection of tables that are all
    refused (here 403) ends the same way. The lapsed run asks Pipedrive once: the field definitions read
    in the background wait for the identity (they were sent anyway, /v1/users/me asked again)."""
    tables = ("--entities", "deals,persons,users")
    assert run_cli(tmp_path, secret_emulator, SECRET, *tables).returncode == 0
    before_tables, before_state = data_tables(tmp_path / "crm.duckdb"), state_files(tmp_path)
    try:
        secret_emulator.control.settings(lapsed=True)
        secret_emulator.control.reset_stats()
        lapsed = run_cli(tmp_path, secret_emulator, SECRET, *tables)
        assert secret_emulator.control.stats()["requests"] == {"/v1/users/me": 1}
        secret_emulator.control.settings(lapsed=False, forbidden="/api/v2/persons,/v1/users")
        refused = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "persons,users")
    finally:
        secret_emulator.control.settings(lapsed=False, forbidden="")
    assert lapsed.returncode == 2, lapsed.stdout + lapsed.stderr
    assert_one_clear_line(lapsed, "subscription has lapsed", "HTTP 402", "Nothing was read or loaded")
    assert data_tables(tmp_path / "crm.duckdb") == before_tables
    assert state_files(tmp_path) == before_state
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert_one_clear_line(refused, "Pipedrive refused every table this run asked for (persons, users)")
    assert "persons: skipped" in refused.stdout and "users: skipped" in refused.stdout
    assert run_cli(tmp_path, secret_emulator, SECRET, *tables).returncode == 0


def test_refused_field_definitions_skip_their_table_instead_of_failing_the_run(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`dealFields` refused (403) ended the run with exit 1 and the refusal's text, loading nothing: the
    deals are skipped as a refused table is, the other tables load, and a run of deals alone is exit 2."""
    try:
        secret_emulator.control.settings(forbidden="/api/v2/dealFields")
        some = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,users")
        only = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals")
    finally:
        secret_emulator.control.settings(forbidden="")
    assert some.returncode == 0, some.stdout + some.stderr
    assert "deals: skipped, its field definitions" in some.stdout and "/api/v2/dealFields" in some.stdout
    tables = data_tables(tmp_path / "crm.duckdb")
    assert tables["users"] > 0 and tables.get("deals", 0) == 0
    assert only.returncode == 2, only.stdout + only.stderr
    assert_one_clear_line(only, "Pipedrive refused every table this run asked for (deals)")


def test_a_second_pipeline_of_another_company_into_the_same_dataset_is_refused(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`--pipeline-name` without `--dataset` loaded a second company into the first one's dataset, its
    records merged over the first's wherever ids met (exit 0)."""
    assert run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,users").returncode == 0
    before = data_tables(tmp_path / "crm.duckdb")
    with run_emulator(seed=8, scale="tiny") as other:
        second = ("--entities", "deals,users", "--pipeline-name", "second")
        refused = run_cli(tmp_path, other, other.api_token, *second)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert_one_clear_line(
            refused, "The dataset pipedrive holds data of the Pipedrive company 'emulated-7'"
        )
        assert data_tables(tmp_path / "crm.duckdb") == before
        apart = run_cli(tmp_path, other, other.api_token, *second, "--dataset", "second")
        assert apart.returncode == 0, apart.stdout + apart.stderr
        with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
            ids = {r[0] for r in con.execute("SELECT id FROM second.deals").fetchall()}
        assert ids == {d["id"] for d in other.control.snapshot("deals")}
    assert (
        run_cli(
            tmp_path, secret_emulator, SECRET, "--entities", "users", "--pipeline-name", "third"
        ).returncode
        == 0
    )


def test_a_pipeline_moves_to_another_dataset_only_with_a_full_refresh(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """One pipeline's state is one dataset's: after runs into `my_data` a run back into `pipedrive` read on
    from `my_data`'s place, and the deals changed in between never reached `pipedrive`. Such a run is refused
    before any request; a pipeline of its own per dataset, or a full refresh (the pipeline moves), loads."""
    deals = ("--entities", "deals")
    assert run_cli(tmp_path, secret_emulator, SECRET, *deals).returncode == 0
    secret_emulator.control.reset_stats()
    refused = run_cli(tmp_path, secret_emulator, SECRET, *deals, "--dataset", "my_data")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert_one_clear_line(
        refused,
        "The pipeline 'pipedrive' loads the dataset pipedrive, not my_data",
        "--pipeline-name pipedrive_my_data",
        "--full-refresh",
    )
    assert secret_emulator.control.stats()["total_requests"] == 0
    own = ("--dataset", "my_data", "--pipeline-name", "pipedrive_my_data")
    assert run_cli(tmp_path, secret_emulator, SECRET, *deals, *own).returncode == 0
    secret_emulator.control.mutate(seed=5, updates=8, creates=3)
    assert run_cli(tmp_path, secret_emulator, SECRET, *deals).returncode == 0
    truth = {(d["id"], d["title"]) for d in secret_emulator.control.snapshot("deals")}
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        assert set(con.execute("SELECT id, title FROM pipedrive.deals").fetchall()) == truth
    moved = run_cli(tmp_path, secret_emulator, SECRET, *deals, "--dataset", "moved", "--full-refresh")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    back = run_cli(tmp_path, secret_emulator, SECRET, *deals)
    assert back.returncode == 2 and "loads the dataset moved, not pipedrive" in back.stderr


def test_first_run_with_wrong_token_loads_nothing(secret_emulator: EmulatorHandle, tmp_path: Path) -> None:
    wrong = f"pd-wrong-{uuid.uuid4().hex}"
    failed = run_cli(tmp_path, secret_emulator, wrong, "--verbose")
    assert failed.returncode == 2
    assert "rejected the API token" in failed.stderr
    assert data_tables(tmp_path / "crm.duckdb") == {}
    assert_nowhere(tmp_path, [wrong], failed.stdout + failed.stderr)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--entities", "deals,nope"], "--entities must be names of tables"),
        (["--start-date", "next tuesday-ish"], "--start-date must be a date"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    secret_emulator: EmulatorHandle, tmp_path: Path, args: list[str], needle: str
) -> None:
    result = run_cli(tmp_path, secret_emulator, SECRET, *args)
    assert result.returncode == 2
    assert_one_clear_line(result, needle)


def test_history_of_an_entity_the_run_does_not_sync(secret_emulator: EmulatorHandle, tmp_path: Path) -> None:
    """`--history deals --entities persons` loaded persons, kept no history and said nothing (exit 0): the
    deals' history never started. Asked on the command line it is refused before anything is read; from
    `[pipedrive] history` (standing, while a run may sync a few entities) the run goes on and says so."""
    asked = ["--entities", "persons", "--history", "deals,persons"]
    refused = run_cli(tmp_path, secret_emulator, SECRET, *asked)
    assert refused.returncode == 2
    assert_one_clear_line(refused, "--history deals: this run does not sync deals (--entities persons)")
    assert data_tables(tmp_path / "crm.duckdb") == {}

    setting = '["deals", "persons"]'
    ran = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "persons", PIPEDRIVE__HISTORY=setting)
    assert ran.returncode == 0, ran.stderr
    assert "history: no history of deals kept by this run, which does not sync it (--entities persons;" in (
        ran.stdout
    )
    tables = data_tables(tmp_path / "crm.duckdb")
    assert tables["persons_history"] == tables["persons"] and "deals_history" not in tables


def test_entities_set_as_a_comma_string_says_what_a_list_looks_like(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """dlt reads `entities` as a list: the message said only 'not a valid Sequence'."""
    result = run_cli(tmp_path, secret_emulator, SECRET, SOURCES__PIPEDRIVE__ENTITIES="users, stages")
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(result, "SOURCES__PIPEDRIVE__ENTITIES", 'a TOML list, ["deals", "persons"]')


@pytest.mark.parametrize(
    ("destination", "needles"),
    [
        (
            "postgres",
            ["DESTINATION__POSTGRES__CREDENTIALS__PASSWORD", "one value, DESTINATION__POSTGRES__CREDENTIALS"],
        ),
        (
            "filesystem",
            ["Missing setting DESTINATION__FILESYSTEM__BUCKET_URL", "destination.filesystem.bucket_url"],
        ),
        ("nosuch", ["Unknown destination 'nosuch'"]),
    ],
)
def test_a_destination_without_its_settings_is_refused_before_anything_is_read(
    secret_emulator: EmulatorHandle, tmp_path: Path, destination: str, needles: list[str]
) -> None:
    """dlt's message named a configuration class and listed dozens of places it looked (exit 1), after the
    source had read the field definitions (9 requests): now the settings to set, exit 2, no request."""
    secret_emulator.control.reset_stats()
    result = run_cli(tmp_path, secret_emulator, SECRET, "--destination", destination)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(result, *needles)
    assert secret_emulator.control.stats()["total_requests"] == 0


def test_the_destination_setting_is_where_the_script_loads_unless_the_flag_says_otherwise(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`[pipedrive] destination` (read by Dagster and Airflow) is the script's too: set to filesystem, the
    deals land as parquet files and no DuckDB file is made; an unknown one is refused before any request,
    naming the setting; `--destination duckdb` wins over it."""
    lake = tmp_path / "lake"
    args = ("--entities", "deals", "--no-views")
    env = {"PIPEDRIVE__DESTINATION": "filesystem", "DESTINATION__FILESYSTEM__BUCKET_URL": str(lake)}
    loaded = run_cli(tmp_path, secret_emulator, SECRET, *args, **env)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    ((deals,),) = duckdb.sql(
        f"SELECT count(DISTINCT id) FROM read_parquet('{lake}/pipedrive/deals/*.parquet')"
    ).fetchall()
    assert deals == len(secret_emulator.control.snapshot("deals"))
    assert not list(tmp_path.glob("*.duckdb"))
    secret_emulator.control.reset_stats()
    refused = run_cli(tmp_path, secret_emulator, SECRET, *args, PIPEDRIVE__DESTINATION="postgress")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert_one_clear_line(
        refused, "Unknown destination 'postgress'", "the destination setting under [pipedrive]"
    )
    assert secret_emulator.control.stats()["total_requests"] == 0
    flag = run_cli(tmp_path, secret_emulator, SECRET, *args, "--destination", "duckdb", **env)
    assert flag.returncode == 0, flag.stdout + flag.stderr
    assert list(tmp_path.glob("*.duckdb"))


def test_a_destination_that_cannot_merge_says_so(secret_emulator: EmulatorHandle, tmp_path: Path) -> None:
    """The filesystem destination appends changed records (dlt's fallback, a warning below the log level):
    the run says so, and the second run's updated deals are there as second rows."""
    lake = tmp_path / "lake"
    args = ("--destination", "filesystem", "--entities", "deals", "--no-views")
    first = run_cli(tmp_path, secret_emulator, SECRET, *args, DESTINATION__FILESYSTEM__BUCKET_URL=str(lake))
    assert first.returncode == 0, first.stderr
    assert "note: the filesystem destination cannot merge, so " in first.stdout
    secret_emulator.control.mutate(seed=11, updates=5)
    second = run_cli(tmp_path, secret_emulator, SECRET, *args, DESTINATION__FILESYSTEM__BUCKET_URL=str(lake))
    assert second.returncode == 0, second.stderr
    ((versions,),) = duckdb.sql(
        f"SELECT count(*) - count(DISTINCT id) FROM read_parquet('{lake}/pipedrive/deals/*.parquet')"
    ).fetchall()
    assert versions > 0  # what the notice says: a row per version


@pytest.mark.parametrize(
    ("setting", "value", "args"),
    [
        ("SOURCES__PIPEDRIVE__OAUTH", "{client_id: SECRET-VALUE", []),
        # a named company's own: it said SOURCES__PIPEDRIVE__OAUTH, which that run does not read first
        ("ACME__SOURCES__PIPEDRIVE__OAUTH", "{client_id: SECRET-VALUE", ["--pipeline-name", "acme"]),
        ("DESTINATION__POSTGRES__CREDENTIALS", "postgres:SECRET-VALUE@", ["--destination", "postgres"]),
        (
            "DESTINATION__POSTGRES__CREDENTIALS",
            "postgresql://u:SECRET-VALUE@h:port/db",
            ["--destination", "postgres"],
        ),
    ],
)
def test_settings_in_one_value_that_do_not_parse_are_named_without_their_value(
    secret_emulator: EmulatorHandle, tmp_path: Path, setting: str, value: str, args: list[str]
) -> None:
    """OAuth as JSON or a connection string that cannot be read went out as dlt's TypeError or ValueError
    (exit 1), naming nothing."""
    secret_emulator.control.reset_stats()
    result = run_cli(tmp_path, secret_emulator, SECRET, *args, **{setting: value})
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(result, f"The setting {setting} is not a ")
    assert "SECRET-VALUE" not in result.stdout + result.stderr
    assert secret_emulator.control.stats()["total_requests"] == 0


def test_a_dataset_named_like_the_duckdb_file_is_refused_before_anything_is_read(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """DuckDB could not tell the file's catalog from the dataset: the load would fail after the extraction."""
    secret_emulator.control.reset_stats()
    result = run_cli(tmp_path, secret_emulator, SECRET, "--dataset", "CRM")
    assert result.returncode == 2
    assert_one_clear_line(result, "The DuckDB file crm.duckdb and the dataset CRM have the same name")
    assert secret_emulator.control.stats()["total_requests"] == 0
    assert data_tables(tmp_path / "crm.duckdb") == {}


@pytest.mark.parametrize("where", ["a-file", "a-file/pipelines"])
def test_a_pipelines_dir_that_cannot_be_a_folder_is_refused_before_anything_is_read(
    secret_emulator: EmulatorHandle, tmp_path: Path, where: str
) -> None:
    """dlt's NotADirectoryError went out as exit 1 without naming the option it came from."""
    (tmp_path / "a-file").write_text("not a folder")
    secret_emulator.control.reset_stats()
    result = run_cli(tmp_path, secret_emulator, SECRET, "--pipelines-dir", str(tmp_path / where))
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(result, f"--pipelines-dir {tmp_path / where} cannot be used as a folder")
    assert secret_emulator.control.stats()["total_requests"] == 0


def test_a_checkout_moved_after_the_first_run_is_refused_before_anything_is_read(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """dlt keeps the default (relative) DuckDB file in the folder of the pipeline's first run: once that
    folder is gone, DuckDB failed with "Cannot open file" after the field definitions were read. Following
    the message's advice (delete the working folder) starts the pipeline where it runs now, loading all."""
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    ok = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "users", cwd=first)
    assert ok.returncode == 0, ok.stderr
    assert f"rows loaded into pipedrive ({first / 'pipedrive_crm.duckdb'})" in ok.stdout
    shutil.rmtree(first)
    secret_emulator.control.reset_stats()
    moved = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "users", cwd=later)
    assert moved.returncode == 2, moved.stdout + moved.stderr
    assert_one_clear_line(moved, str(first), "no longer exists", "DESTINATION__DUCKDB__CREDENTIALS")
    assert secret_emulator.control.stats()["total_requests"] == 0
    assert not (later / "pipedrive_crm.duckdb").exists()
    shutil.rmtree(tmp_path / "pipelines" / "pipedrive")
    again = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "users", cwd=later)
    assert again.returncode == 0, again.stderr
    users = len(secret_emulator.control.snapshot("users"))
    assert users > 0 and data_tables(later / "pipedrive_crm.duckdb")["users"] == users


def test_a_duckdb_file_in_a_folder_that_does_not_exist_is_refused_before_anything_is_read(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    secret_emulator.control.reset_stats()
    file = tmp_path / "no such folder" / "crm.duckdb"
    result = run_cli(tmp_path, secret_emulator, SECRET, DESTINATION__DUCKDB__CREDENTIALS=str(file))
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(result, f"{file.parent} does not exist", "create it")
    assert secret_emulator.control.stats()["total_requests"] == 0


@pytest.mark.parametrize("name", ["config.toml", "secrets.toml"])
def test_a_settings_file_that_is_not_toml_is_one_line_naming_it(
    secret_emulator: EmulatorHandle, tmp_path: Path, name: str
) -> None:
    """A typo in .dlt/*.toml went out as dlt's traceback (exit 1); a secrets file's values stay out."""
    project = tmp_path / "project"
    (project / ".dlt").mkdir(parents=True)
    (project / ".dlt" / name).write_text('[sources.pipedrive]\napi_token = "half\n', encoding="utf-8")
    result = run_cli(tmp_path, secret_emulator, SECRET, cwd=project)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(result, f".dlt/{name} is not valid TOML", "at line 2 col")
    reason = result.stderr.strip().split("is not valid TOML: ")[1]
    assert reason.startswith("at line 2 col") == (name == "secrets.toml")  # nothing of a secrets file's text


def test_run_from_another_folder_reads_the_settings_of_its_checkout(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """cron without `cd`: dlt read .dlt/ from the current folder only, so the checkout's secrets.toml went
    unseen and the demo emulator was synced instead, exit 0."""
    checkout = tmp_path / "checkout"
    (checkout / "pipelines").mkdir(parents=True)
    shutil.copy(SCRIPT, checkout / "pipelines" / SCRIPT.name)  # the package itself is installed
    (checkout / ".dlt").mkdir()
    (checkout / ".dlt" / "secrets.toml").write_text(
        f'[sources.pipedrive]\napi_token = "{SECRET}"\nbase_url = "{secret_emulator.base_url}"\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DLT_PROJECT_DIR"))}
    env.update(
        RUNTIME__DLTHUB_TELEMETRY="false", DESTINATION__DUCKDB__CREDENTIALS=str(tmp_path / "crm.duckdb")
    )
    command = [sys.executable, str(checkout / "pipelines" / SCRIPT.name), "--entities", "users"]
    command += ["--pipelines-dir", str(tmp_path / "pipelines")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=elsewhere, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "emulator" not in result.stdout
    users = len(secret_emulator.control.snapshot("users"))
    assert users > 0 and data_tables(tmp_path / "crm.duckdb")["users"] == users


def test_missing_token_names_the_setting(secret_emulator: EmulatorHandle, tmp_path: Path) -> None:
    result = run_cli(tmp_path, secret_emulator, "")
    assert result.returncode == 2
    assert_one_clear_line(result, "SOURCES__PIPEDRIVE__API_TOKEN")


def test_unreachable_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    class Nowhere:
        base_url = "http://127.0.0.1:9"  # discard port: connection refused

    env_token = SECRET
    result = run_cli(
        tmp_path, Nowhere(), env_token, "--entities", "users", SOURCES__PIPEDRIVE__BACKOFF_BASE_S="0.01"
    )  # type: ignore[arg-type]
    assert result.returncode == 1
    assert_one_clear_line(result, "Could not connect to http://127.0.0.1:9", "SOURCES__PIPEDRIVE__BASE_URL")


def test_full_refresh_of_some_entities_keeps_the_others(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    assert run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,persons").returncode == 0
    before = data_tables(tmp_path / "crm.duckdb")
    again = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals", "--full-refresh")
    assert again.returncode == 0, again.stderr
    after = data_tables(tmp_path / "crm.duckdb")
    assert after["persons"] == before["persons"] and after["deals"] == before["deals"]
    deals_line = next(line for line in again.stdout.splitlines() if line.startswith("deals "))
    assert int(deals_line.split()[1].replace(",", "")) == before["deals"]  # reloaded from scratch
    # a view over tables this run did not sync is skipped with one notice, the summary's (not a log line too)
    said = [line for line in (again.stdout + again.stderr).splitlines() if "view v_deals skipped" in line]
    assert len(said) == 1, again.stdout + again.stderr
    # the script runs dlt's steps itself (views dropped between normalize and load): one trace holds them
    # all, as `pipeline.run`'s did, for `dlt pipeline pipedrive trace` and code reading `last_trace`
    trace = dlt.attach("pipedrive", pipelines_dir=str(tmp_path / "pipelines")).last_trace
    assert [step.step for step in trace.steps] == ["extract", "normalize", "load", "run"]
    assert trace.last_normalize_info.row_counts["deals"] == before["deals"]


def test_full_refresh_of_the_entities_a_setting_selects_keeps_the_others(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`--full-refresh` with the tables chosen by the `entities` setting (not the flag) dropped the whole
    source: every other table the pipeline had loaded (persons here, an opt-in table such as deal_flow after
    a run of the defaults) was dropped from the destination and not loaded again."""
    assert run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,persons").returncode == 0
    before = data_tables(tmp_path / "crm.duckdb")
    only_deals = {"SOURCES__PIPEDRIVE__ENTITIES": '["deals"]'}
    again = run_cli(tmp_path, secret_emulator, SECRET, "--full-refresh", **only_deals)
    assert again.returncode == 0, again.stderr
    assert summary_rows(again, "deals") == before["deals"]  # reloaded from scratch
    assert data_tables(tmp_path / "crm.duckdb")["persons"] == before["persons"]


def summary_rows(result: subprocess.CompletedProcess[str], table: str) -> int:
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"{table} "))
    return int(line.split()[1].replace(",", ""))


def test_the_summary_counts_the_rows_the_destination_kept(tmp_path: Path) -> None:
    """The summary's rows are the rows the load left in the destination, not the rows written: a deal that
    lost its last product writes a row that only clears its old products, and the load keeps none."""
    with run_emulator(seed=11, scale="tiny", api_token=SECRET) as emulator:
        both = ("--entities", "deals,deal_products")
        first = run_cli(tmp_path, emulator, SECRET, *both)
        assert first.returncode == 0, first.stderr
        assert summary_rows(first, "deal_products") == data_tables(tmp_path / "crm.duckdb")["deal_products"]
        by_deal: dict[int, list[int]] = {}
        for row in emulator.control.snapshot("deal_products"):
            by_deal.setdefault(row["deal_id"], []).append(row["id"])
        with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
            query = "SELECT DISTINCT deal_id FROM pipedrive.deal_products"
            loaded = {deal for (deal,) in con.execute(query).fetchall()}
        single = next(d for d, ids in by_deal.items() if len(ids) == 1 and d in loaded)
        several = next(d for d, ids in by_deal.items() if len(ids) > 2 and d in loaded)
        ops = [{"op": "delete", "table": "deal_products", "id": by_deal[d][0]} for d in (single, several)]
        emulator.control.mutate(ops=ops)
        second = run_cli(tmp_path, emulator, SECRET, *both)
    assert second.returncode == 0, second.stderr
    assert summary_rows(second, "deal_products") == len(by_deal[several]) - 1  # none for the emptied deal
    assert "more rows written than loaded: rows that only cleared" in second.stdout, second.stdout


def test_custom_fields_are_readable_and_keep_option_ids_keeps_ids(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    result = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals", "--keep-option-ids")
    assert result.returncode == 0, result.stderr
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        columns = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'pipedrive' AND table_name = 'deals'"
            ).fetchall()
        }
        enum_column = con.execute(
            "SELECT column_name FROM pipedrive.custom_fields WHERE entity = 'deals' AND field_type = 'enum' "
            "ORDER BY column_name LIMIT 1"
        ).fetchone()[0]
    assert enum_column in columns and f"{enum_column}_id" in columns  # the label and the raw option id
    assert not [c for c in columns if len(c) >= 40]  # no hash-named column


def test_demo_runs_without_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    env.update(RUNTIME__DLTHUB_TELEMETRY="false", DLT_PROJECT_DIR=str(tmp_path))
    command = [
        sys.executable,
        str(SCRIPT),
        "--demo",
        "--demo-scale",
        "tiny",
        "--pipelines-dir",
        "p",
        "--show",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "deals" in result.stdout and "total:" in result.stdout
    assert data_tables(tmp_path / "pipedrive_demo.duckdb")["deals"] > 0
    # run from another folder, the demo writes its file there (dlt would keep the first run's folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command[command.index("p")] = str(tmp_path / "p")
    again = subprocess.run(command, env=env, capture_output=True, text=True, cwd=elsewhere, timeout=600)
    assert again.returncode == 0, again.stderr
    assert data_tables(elsewhere / "pipedrive_demo.duckdb")["deals"] > 0


def test_ctrl_c_ends_in_one_line_and_the_next_run_loads_everything(tmp_path: Path) -> None:
    """Ctrl-C printed `error: KeyboardInterrupt:  (run with --verbose for details)` with exit 1."""
    with run_emulator(seed=7, scale="tiny", api_token=SECRET, latency_ms=100) as emulator:
        env = cli_env(tmp_path, emulator, SECRET)  # reading at 100 ms a request: far from done at the signal
        command = [sys.executable, str(SCRIPT), "--pipelines-dir", str(tmp_path / "pipelines")]
        interrupted = signal_once_reading(command, env, tmp_path, signal.SIGINT)
        assert interrupted.returncode == 130, interrupted.stdout + interrupted.stderr
        assert_one_clear_line(interrupted, "interrupted. Nothing is lost: run the same command again")
        again = run_cli(tmp_path, emulator, SECRET)
        assert again.returncode == 0, again.stderr
        deals = len(emulator.control.snapshot("deals"))
        assert deals > 0 and data_tables(tmp_path / "crm.duckdb")["deals"] == deals


def test_an_interrupt_that_lands_while_a_library_handles_its_own_error_is_an_interrupt(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ctrl-C as dlt probed a new DuckDB's state table (a CatalogException it handles) ended with that
    error's text and exit 1, not "interrupted" and 130: the innermost cause was DuckDB's error, the
    interrupt above it (seen under load in the test above)."""
    from reliability_support import script_module

    try:
        try:
            raise duckdb.CatalogException('Table with name "pipedrive._dlt_pipeline_state" does not exist')
        except duckdb.CatalogException:
            raise KeyboardInterrupt  # noqa: B904 (the signal, raised in the handler: DuckDB's error its context)
    except KeyboardInterrupt as interrupt:
        failed = RuntimeError("Pipeline execution failed at stage sync")  # as dlt wraps a step's failure
        failed.__cause__ = interrupt
    assert script_module().report_failure(failed, verbose=False) == 130
    assert capsys.readouterr().err.startswith("error: interrupted. Nothing is lost")


def test_sigterm_on_the_demo_ends_in_one_line_and_stops_its_emulator(tmp_path: Path) -> None:
    """A scheduler's stop (SIGTERM) ended the process at once, without a word, and left the demo's emulator
    serving for ever (its stderr, inherited, kept this test's pipe open: communicate() never returned)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__")}
    command = [sys.executable, str(SCRIPT), "--demo", "--demo-scale", "tiny", "--pipelines-dir", "p"]
    stopped = signal_once_reading(command, env, tmp_path, signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stdout + stopped.stderr
    assert_one_clear_line(stopped, "interrupted. Nothing is lost")


def assert_nowhere(workdir: Path, secrets: list[str], output: str) -> None:
    for secret in secrets:
        assert secret not in output
        needle = secret.encode()
        leaks = [p for p in workdir.rglob("*") if p.is_file() and needle in p.read_bytes()]
        assert not leaks, leaks


def test_lost_credentials_after_real_syncs_fail_instead_of_syncing_the_demo(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    assert run_cli(tmp_path, secret_emulator, SECRET, "--entities", "users").returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOURCES__PIPEDRIVE__")}
    env["DLT_PROJECT_DIR"] = str(tmp_path)
    command = [sys.executable, str(SCRIPT), "--pipelines-dir", str(tmp_path / "pipelines")]
    lost = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert lost.returncode == 2, lost.stdout + lost.stderr
    assert_one_clear_line(lost, "SOURCES__PIPEDRIVE__API_TOKEN", "--demo")
    assert not (tmp_path / "pipedrive_demo.duckdb").exists()  # no demo sync behind the user's back


def test_loaded_packages_and_state_rows_older_than_the_newest_few_are_deleted(tmp_path: Path) -> None:
    """dlt keeps every loaded package with its files, and a row of the whole state per load in the
    destination: a sync on a schedule filled the disk, run by run. The state stays restorable."""
    loaded = tmp_path / "pipelines" / "pipedrive" / "load" / "loaded"
    with run_emulator(seed=7, scale="tiny", api_token=SECRET) as emulator:

        def sync(keep: str, seed: int) -> subprocess.CompletedProcess[str]:
            emulator.control.mutate(seed=seed, updates=6, creates=2)  # something to load in every run
            emulator.control.mutate(ops=[{"op": "advance_clock", "seconds": 900}])
            emulator.control.reset_stats()
            return run_cli(tmp_path, emulator, SECRET, "--entities", "deals,persons", **{KEEP: keep})

        for seed in range(4):
            assert sync("2", seed).returncode == 0
        assert sorted(p.name for p in loaded.iterdir()) == loads(tmp_path)[-3:]  # 2 kept, then this run's
        assert len(loads(tmp_path)) == 4
        assert state_rows(tmp_path) == loads(tmp_path)  # before the 4th run: the newest 3, all there were

        refused = sync("-1", 10)
        assert refused.returncode == 2
        assert_one_clear_line(refused, "keep_loaded_packages must be a whole number of 0 or more, not '-1'")
        assert emulator.control.stats()["total_requests"] == 0
        assert len(list(loaded.iterdir())) == 3 and len(loads(tmp_path)) == 4  # nothing deleted

        assert sync("0", 11).returncode == 0
        assert [p.name for p in loaded.iterdir()] == loads(tmp_path)[-1:]
        assert len(loads(tmp_path)) == 5 and state_rows(tmp_path) == loads(tmp_path)[-4:]  # the 1st went

        shutil.rmtree(tmp_path / "pipelines")  # the state comes back from the destination's newest row
        emulator.control.mutate(ops=[{"op": "advance_clock", "seconds": 900}])
        again = run_cli(tmp_path, emulator, SECRET, "--entities", "deals,persons")
        assert again.returncode == 0 and "total: 0 rows loaded" in again.stdout, again.stdout[-800:]


KEEP = "PIPEDRIVE__KEEP_LOADED_PACKAGES"


def state_rows(workdir: Path) -> list[str]:
    """The loads whose pipeline state the destination still holds, oldest first."""
    return first_column(workdir, "SELECT _dlt_load_id FROM pipedrive._dlt_pipeline_state ORDER BY 1")


def loads(workdir: Path) -> list[str]:
    """The ids of the loads the destination completed, oldest first."""
    return first_column(workdir, "SELECT load_id FROM pipedrive._dlt_loads ORDER BY 1")


def first_column(workdir: Path, query: str) -> list[str]:
    with duckdb.connect(str(workdir / "crm.duckdb"), read_only=True) as con:
        return [row[0] for row in con.execute(query).fetchall()]


def test_a_second_run_while_the_first_reads_stops_and_leaves_the_first_alone(tmp_path: Path) -> None:
    """The second run took the first one's extract for a killed run's leftover and removed it: the first
    failed with `error: FileNotFoundError: … schema.json`, the second printed `removed 1 unfinished
    extract(s) of failed or killed runs`."""
    with run_emulator(seed=7, scale="tiny", api_token=SECRET, latency_ms=100) as emulator:
        env = cli_env(tmp_path, emulator, SECRET)  # at 100 ms a request the first run reads for seconds
        command = [sys.executable, str(SCRIPT), "--pipelines-dir", str(tmp_path / "pipelines")]
        first = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        assert first.stdout is not None
        for line in first.stdout:
            if " page " in line:  # reading: its extract is in the pipeline's folder
                break
        second = run_cli(tmp_path, emulator, SECRET)
        rest, errors = first.communicate(timeout=600)
        assert second.returncode == 1, second.stdout + second.stderr
        assert_one_clear_line(
            second, f"Another run of the pipeline 'pipedrive' is still going (process {first.pid})"
        )
        assert "removed" not in second.stdout and "total:" not in second.stdout
        assert first.returncode == 0, errors
        assert "total:" in rest
        deals = len(emulator.control.snapshot("deals"))
        assert deals > 0 and data_tables(tmp_path / "crm.duckdb")["deals"] == deals
        again = run_cli(tmp_path, emulator, SECRET, "--entities", "deals")  # the lock went with the first
        assert again.returncode == 0, again.stderr


def test_progress_lines_from_the_entities_threads_do_not_run_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The entities page in threads of their own and each reports its progress: print() wrote a line's
    text and its newline apart, so a first --demo showed `deal_fields … 43 records read  person_fields …
    33 records read` on one line and an empty one after it."""
    from reliability_support import script_module

    from pipedrive_source.run import EntityProgress

    writes: list[str] = []

    class Terminal:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", Terminal())
    printer = script_module().ProgressPrinter()
    printer("deal_fields", EntityProgress(pages=1, rows=43))
    printer("person_fields", EntityProgress(pages=1, rows=33))
    shown = [text for text in writes if text]
    assert shown == [
        "  deal_fields            page     1         43 records read\n",
        "  person_fields          page     1         33 records read\n",
    ]


def test_companies_refuse_a_flag_or_answer_help_before_the_first_company(tmp_path: Path) -> None:
    """A flag argparse cannot read ended the run under the first company's header (its exit left the
    loop), the other companies never tried; `--help` printed that header, then the usage of the pipeline
    script under the name companies.py, with --dataset and --pipeline-name, which companies.py refuses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "PIPEDRIVE"))}
    env.update(
        PIPEDRIVE__COMPANIES='["acme", "globex"]',
        PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__API_TOKEN=SECRET,
        PIPEDRIVE_GLOBEX__SOURCES__PIPEDRIVE__API_TOKEN=SECRET,
        DLT_PROJECT_DIR=str(tmp_path),
    )
    command = [sys.executable, str(ROOT / "pipelines" / "companies.py"), "--pipelines-dir", str(tmp_path)]
    bad = subprocess.run(
        [*command, "--burst-limit", "1.5"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert_one_clear_line(bad, "argument --burst-limit: invalid int value: '1.5'")
    assert "== company" not in bad.stdout
    helped = subprocess.run([*command, "--help"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "== company" not in helped.stdout and "usage:" not in helped.stdout
    assert "Sync several Pipedrive companies" in helped.stdout
    assert "pipedrive_pipeline.py (its --help lists them)" in helped.stdout
    assert not list(tmp_path.iterdir())  # no pipeline folder, no DuckDB file


def test_a_history_started_later_is_told_what_this_run_gives_it(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Each of these runs warned that the history `starts with the deals that change from now on …; the
    next --reconcile gives it every record`: the full refresh its refusal asks for and a reconcile, which
    both give the history every record, and a run then refused by its first page for the deals' nested
    tables (warned, read, refused: two answers, one of them wrong, and requests for nothing)."""
    first = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,notes")
    assert first.returncode == 0, first.stderr
    before = data_tables(tmp_path / "crm.duckdb")

    refused = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals", "--history", "deals")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert_one_clear_line(refused, "deals was loaded without history", "--full-refresh --entities deals")
    assert "  deals " not in refused.stdout  # refused before reading them (only their field definitions)
    assert "starts with" not in refused.stdout + refused.stderr
    assert data_tables(tmp_path / "crm.duckdb") == before

    reconciled = run_cli(
        tmp_path, secret_emulator, SECRET, "--entities", "notes", "--history", "notes", "--reconcile"
    )
    refreshed = run_cli(
        tmp_path, secret_emulator, SECRET, "--full-refresh", "--entities", "deals", "--history", "deals"
    )
    tables = data_tables(tmp_path / "crm.duckdb")
    for run in (reconciled, refreshed):
        assert run.returncode == 0, run.stderr
        assert "starts with" not in run.stdout + run.stderr
    assert tables["notes_history"] == tables["notes"] > 0
    assert tables["deals_history"] == tables["deals"] > 0


def test_a_setting_misspelt_is_named_with_the_one_meant(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """dlt passes over a key that no argument reads: `page_sise = 5` (and SOURCES__PIPEDRIVE__FULL_READ_HOURS)
    ran with the default page size without a word, and the analyst wondered why the setting did nothing; a
    typo under [pipedrive] (`destinaton`) loaded into DuckDB instead of the warehouse meant."""
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(
        "[sources.pipedrive]\npage_sise = 5\nkeep_option_ids = false\n"
        '[pipedrive_acme.sources.pipedrive]\nbase_ur = "x"\n'
        '[pipedrive]\ndestinaton = "postgres"\nkeep_loaded_packages = 3\n'
    )
    ran = run_cli(
        tmp_path,
        secret_emulator,
        SECRET,
        "--entities",
        "pipelines",
        SOURCES__PIPEDRIVE__FULL_READ_HOURS="3",
        PIPEDRIVE_ACME__PIPEDRIVE__HISTORIES='["deals"]',
    )
    assert ran.returncode == 0, ran.stderr
    lines = [line for line in ran.stdout.splitlines() if line.startswith("settings: ")]
    file = tmp_path / ".dlt" / "config.toml"
    assert lines == [
        f"settings: page_sise under [sources.pipedrive] in {file} names no setting of the connector, which "
        "reads none of it: did you mean page_size?",
        f"settings: destinaton under [pipedrive] in {file} names no setting of the connector, which reads "
        "none of it: did you mean destination?",
        f"settings: base_ur under [pipedrive_acme.sources.pipedrive] in {file} names no setting of the "
        "connector, which reads none of it: did you mean base_url?",
        "settings: full_read_hours (SOURCES__PIPEDRIVE__FULL_READ_HOURS) names no setting of the connector, "
        "which reads none of it: did you mean full_read_interval_hours?",
        "settings: histories (PIPEDRIVE_ACME__PIPEDRIVE__HISTORIES) names no setting of the connector, which "
        "reads none of it: did you mean history?",
    ]
    assert data_tables(tmp_path / "crm.duckdb")["pipelines"] > 0
    (tmp_path / ".dlt" / "config.toml").write_text("[sources.pipedrive]\npage_size = 5\n")
    spelt = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "pipelines")
    assert spelt.returncode == 0, spelt.stderr
    assert "settings: " not in spelt.stdout


def test_the_run_says_when_it_stops_reading_and_starts_loading(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """The progress lines stop with the reading, and the normalize and load after it (seconds at a large
    company) went on without a word: a run that looked stuck after its last page."""
    ran = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,persons")
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    said = [
        lines.index("reading done; normalizing what was read ..."),
        lines.index("loading into pipedrive ..."),
    ]
    last_page = max(i for i, line in enumerate(lines) if " page " in line)
    assert (
        last_page < said[0] < said[1] < lines.index(next(line for line in lines if line.startswith("table ")))
    )
    quiet = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals,persons", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "reading done" not in quiet.stdout and "loading into" not in quiet.stdout


def test_a_token_in_config_toml_says_where_it_belongs(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """dlt reads no secret from config.toml: the run ended in exit 1 with `error: ValueNotSecretException:
    Provider `config.toml` cannot hold secret values but key `sources.pipedrive.api_token` ...`, a setting to
    fix that named neither the file to put it in nor the variable."""
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(f'[sources.pipedrive]\napi_token = "{SECRET}"\n')
    env = cli_env(tmp_path, secret_emulator, SECRET)
    del env["SOURCES__PIPEDRIVE__API_TOKEN"]
    command = [sys.executable, str(SCRIPT), "--pipelines-dir", str(tmp_path / "pipelines")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(
        result,
        "api_token is a secret, which dlt does not read from config.toml",
        "move it, with its section, to .dlt/secrets.toml, or set SOURCES__PIPEDRIVE__API_TOKEN instead.",
    )
    verbose = subprocess.run(
        [*command, "--verbose"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr  # dlt's, without the value
    assert SECRET not in result.stdout + result.stderr + verbose.stdout + verbose.stderr
    assert data_tables(tmp_path / "crm.duckdb") == {}


def test_a_start_date_on_tables_loaded_before_says_they_go_on_from_their_last_load(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`--start-date 2020-01-01` on a pipeline that had synced, meant to load older records, ran as any
    incremental run and said nothing: the tables loaded before continue from their last load."""
    assert run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals").returncode == 0
    dated = run_cli(
        tmp_path, secret_emulator, SECRET, "--entities", "deals,notes", "--start-date", "2020-01-01"
    )
    assert dated.returncode == 0, dated.stderr
    assert (
        "start date: --start-date applies to a table's first load; these continue from their last load: "
        "deals (--full-refresh --entities deals --start-date 2020-01-01 loads them again from then)"
    ) in dated.stdout.splitlines()
    assert data_tables(tmp_path / "crm.duckdb")["notes"] == len(secret_emulator.control.snapshot("notes"))
    refreshed = run_cli(
        tmp_path,
        secret_emulator,
        SECRET,
        "--entities",
        "deals",
        "--start-date",
        "2020-01-01",
        "--full-refresh",
    )
    assert refreshed.returncode == 0, refreshed.stderr
    assert "start date:" not in refreshed.stdout


def test_a_pipelines_dir_that_cannot_hold_the_lock_file_is_refused_before_anything_is_read(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """The pipeline's lock file (one run at a time) that cannot be opened ended in exit 1 and `error:
    PermissionError: …` (a folder that exists but this user may not write in: tested here with a folder in
    the lock file's place, as the tests run as root, whom permissions do not stop)."""
    (tmp_path / "pipelines" / ".pipedrive.lock").mkdir(parents=True)
    result = run_cli(tmp_path, secret_emulator, SECRET)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_clear_line(
        result,
        f"--pipelines-dir {tmp_path / 'pipelines'} cannot be used as a folder (its lock file .pipedrive.lock",
        "give a folder this user can write",
    )
    assert data_tables(tmp_path / "crm.duckdb") == {}


def test_a_list_flag_given_twice_with_two_lists_is_refused_before_anything_is_read(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """argparse keeps a flag's last value: `--entities deals --entities persons` synced persons alone, exit
    0, and `--history deals --history persons` kept the history of persons alone, without a word."""
    refused = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals", "--entities=persons")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert_one_clear_line(
        refused,
        "argument --entities: given 'deals' and then 'persons'; give it once, with every name (--entities "
        "deals,persons)",
    )
    history = run_cli(
        tmp_path, secret_emulator, SECRET, "--history", "deals", "--quiet", "--history", "persons"
    )
    assert history.returncode == 2, history.stdout + history.stderr
    assert_one_clear_line(history, "argument --history: given 'deals' and then 'persons'; give it once")
    assert not (tmp_path / "pipelines").exists() and data_tables(tmp_path / "crm.duckdb") == {}
    again = run_cli(
        tmp_path, secret_emulator, SECRET, "--entities", "users", "--entities", "users", "--quiet"
    )
    assert again.returncode == 0, again.stderr  # the same list twice asks for the same
    assert data_tables(tmp_path / "crm.duckdb")["users"] > 0


def test_a_section_misspelt_is_named_with_the_one_meant_without_its_values(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """dlt passes over a section no lookup reads: the token under `[source.pipedrive]` in secrets.toml
    ended in `No Pipedrive credentials`, a destination under `[pipedrve]` loaded into DuckDB, and nothing
    said that the section was the mistake. Sections of dlt's and of other sources are left alone."""
    (tmp_path / ".dlt").mkdir()
    secrets = tmp_path / ".dlt" / "secrets.toml"
    secrets.write_text(
        f'[source.pipedrive]\napi_token = "{SECRET}"\n'
        f'[pipedrive_acme.sources.pipedrve]\napi_token = "{SECRET}"\n'
    )
    config = tmp_path / ".dlt" / "config.toml"
    config.write_text(
        '[pipedrve]\ndestination = "postgres"\n[Sources.Pipedrive]\npage_size = 5\n'
        '[sources.hubspot]\npage_size = 5\n[pipedrive.runtime]\nlog_level = "WARNING"\n'
        "[pipedrive_acme.sources.pipedrive]\npage_size = 5\n"
    )
    env = cli_env(tmp_path, secret_emulator, SECRET, SOURCE__PIPEDRIVE__BASE_URL=secret_emulator.base_url)
    del env["SOURCES__PIPEDRIVE__API_TOKEN"]
    command = [sys.executable, str(SCRIPT), "--pipelines-dir", str(tmp_path / "pipelines")]
    ran = subprocess.run(
        [*command, "--pipeline-name", "pipedrive"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert ran.returncode == 2, ran.stdout + ran.stderr  # no token where dlt looks
    lines = [line for line in ran.stdout.splitlines() if line.startswith("settings: ")]
    assert lines == [
        f"settings: [source.pipedrive] in {secrets} names no section of the connector, which reads none of "
        "it: did you mean [sources.pipedrive]?",
        f"settings: [pipedrive_acme.sources.pipedrve] in {secrets} names no section of the connector, which "
        "reads none of it: did you mean [pipedrive_acme.sources.pipedrive]?",
        f"settings: [pipedrve] in {config} names no section of the connector, which reads none of it: did "
        "you mean [pipedrive]?",
        f"settings: [Sources.Pipedrive] in {config} names no section of the connector, which reads none of "
        "it: did you mean [sources.pipedrive]?",
        "settings: [source.pipedrive] (SOURCE__PIPEDRIVE__BASE_URL) names no section of the connector, which "
        "reads none of it: did you mean [sources.pipedrive]?",
    ]
    assert SECRET not in ran.stdout + ran.stderr
    secrets.write_text(f'[sources.pipedrive]\napi_token = "{SECRET}"\n')
    config.write_text('[sources.hubspot]\npage_size = 5\n[pipedrive.runtime]\nlog_level = "WARNING"\n')
    del env["SOURCE__PIPEDRIVE__BASE_URL"]
    spelt = subprocess.run(
        [*command, "--entities", "pipelines"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert spelt.returncode == 0, spelt.stdout + spelt.stderr
    assert "settings: " not in spelt.stdout and data_tables(tmp_path / "crm.duckdb")["pipelines"] > 0


def test_a_history_of_the_setting_refused_for_a_full_refresh_names_the_setting(
    secret_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`[pipedrive] history = ["deals"]` on deals loaded before without history is refused until a full
    refresh; the refusal said to run `--full-refresh --entities deals --history deals`, a flag the user had
    not given, and not that the setting asked for the history."""
    first = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals")
    assert first.returncode == 0, first.stderr
    before = data_tables(tmp_path / "crm.duckdb")
    refused = run_cli(
        tmp_path, secret_emulator, SECRET, "--entities", "deals", PIPEDRIVE__HISTORY='["deals"]'
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert_one_clear_line(
        refused,
        "deals was loaded without history",
        "(--full-refresh --entities deals, as [pipedrive] history names it; or leave it out of [pipedrive] "
        "history)",
    )
    assert "--history" not in refused.stderr
    assert data_tables(tmp_path / "crm.duckdb") == before
    flag = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals", "--history", "deals")
    assert flag.returncode == 2, flag.stdout + flag.stderr
    assert_one_clear_line(flag, "(--full-refresh --entities deals --history deals)")
