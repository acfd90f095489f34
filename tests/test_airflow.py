"""pipelines/airflow_dag.py in a real Airflow: the DAG parses without credentials (one task per resource
group, retries, chained, views last), and `airflow dags test` runs every task against the emulator, twice: a
full load equal to the ground truth, then an incremental one after changes, deleted records flagged.

Needs the optional extra (`uv sync --extra airflow`); Airflow runs in subprocesses with its own AIRFLOW_HOME
(SQLite), so its configuration and logging never leak into the other tests. Slow: about 4 minutes on one
worker; CI spreads its tests over the workers (`--dist load`), each with an Airflow home of its own."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

# find, not import: importing Airflow reconfigures the process's logging, which the other tests rely on
if importlib.util.find_spec("airflow") is None:
    pytest.skip("Airflow is an optional extra: uv sync --extra airflow", allow_module_level=True)

from connector_fixtures import (  # noqa: E402
    DEFAULT_TABLES,
    SECRET_OF_UNUSABLE,
    UNUSABLE_DESTINATIONS,
    compare,
    load_truth,
    make_pipeline,
    refuse_a_changed_deal,
    synced_rows,
)
from test_connector_postgres import VIEW_TABLES, postgres, postgres_reader  # noqa: E402, F401 (postgres: a fixture)

from pipedrive_source.emulator import EmulatorHandle  # noqa: E402
from pipedrive_source.entities import BY_NAME, DEAL_BATCH, PER_RECORD, SORTED, UPDATED_SINCE  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW = Path(sys.executable).parent / "airflow"
DAG_ID = "pipedrive_sync"

PARSE = """
import json
from airflow.dag_processing.dagbag import DagBag
import airflow_dag
bag = DagBag(dag_folder=airflow_dag.__file__)
dags = {}
for dag_id, dag in bag.dags.items():
    dags[dag_id] = {
        "schedule": str(dag.schedule),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "tasks": {t.task_id: {"retries": t.retries, "upstream": sorted(t.upstream_task_ids),
                              "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule)}
                  for t in dag.tasks},
    }
companies = {c.name: airflow_dag.company_groups(c) for c in airflow_dag.configured_companies()}
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags,
                  "groups": airflow_dag.RESOURCE_GROUPS, "uncovered": airflow_dag.uncovered_entities(),
                  "companies": companies}))
"""

# the import errors Airflow shows for the DAG file argv[1]
IMPORT_ERRORS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({path: str(error) for path, error in bag.import_errors.items()}))
"""


def dag_import_error(env: dict[str, str]) -> tuple[str, str]:
    """The one import error Airflow shows for our DAG file under `env`, and all the parse printed."""
    parsed = subprocess.run(
        [sys.executable, "-c", IMPORT_ERRORS, str(ROOT / "pipelines" / "airflow_dag.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    (error,) = json.loads(parsed.stdout.strip().splitlines()[-1]).values()  # what Airflow shows
    return error, parsed.stdout + parsed.stderr


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A private Airflow: AIRFLOW_HOME with a migrated SQLite database, a dags folder holding only our DAG."""
    home = tmp_path_factory.mktemp("airflow")
    (home / "dags").mkdir()
    (home / "dags" / "airflow_dag.py").symlink_to(ROOT / "pipelines" / "airflow_dag.py")
    (home / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "DESTINATION__", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        TMPDIR=str(home / "tmp"),  # dlt's helper puts each task group's working folder there
        RUNTIME__DLTHUB_TELEMETRY="false",
        PIPEDRIVE_TASK_RETRIES="0",  # a failure fails the test now instead of waiting for a retry
    )
    migrate = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    return env


def test_the_dag_parses_without_credentials(airflow_env: dict[str, str]) -> None:
    env = {**airflow_env, "PYTHONPATH": str(ROOT / "pipelines"), "PIPEDRIVE_TASK_RETRIES": "2"}
    parsed = subprocess.run(
        [sys.executable, "-c", PARSE], env=env, capture_output=True, text=True, timeout=300
    )
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    result: dict[str, Any] = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert list(result["dags"]) == [DAG_ID]
    dag = result["dags"][DAG_ID]
    assert (dag["catchup"], dag["max_active_runs"]) == (False, 1)
    groups = list(result["groups"])
    assert set(dag["tasks"]) == {f"{group}.pipedrive" for group in groups} | {"analyst_views"}
    for task in dag["tasks"].values():
        assert task["retries"] == 2 and task["trigger_rule"] == "all_done"
    order = [f"{group}.pipedrive" for group in groups] + ["analyst_views"]
    for before, after in zip(order, order[1:], strict=False):  # one group after another, views last
        assert dag["tasks"][after]["upstream"] == [before]

    assert result["uncovered"] == []  # every entity, opt-in ones too, is in some group
    assert result["companies"]["pipedrive"] == {
        group: [t for t in tables if t not in BY_NAME or not BY_NAME[t].opt_in]
        for group, tables in result["groups"].items()
    }
    group_of = {table: group for group, tables in result["groups"].items() for table in tables}
    for table, group in group_of.items():
        entity = BY_NAME.get(table)
        if entity and entity.strategy in (
            DEAL_BATCH,
            PER_RECORD,
        ):  # a child is read from its parent's changed records
            assert group_of[entity.parent] == group, table


def test_a_history_name_that_cannot_have_one_fails_the_dag_import(airflow_env: dict[str, str]) -> None:
    """Each group keeps the history of the `[pipedrive] history` entities among its tables: a typo matched
    none and was dropped without a word (the pipeline script stops with exit 2)."""
    env = {**airflow_env, "PYTHONPATH": str(ROOT / "pipelines"), "PIPEDRIVE__HISTORY": '["deal"]'}
    parsed = subprocess.run(
        [sys.executable, "-c", PARSE], env=env, capture_output=True, text=True, timeout=300
    )
    assert "No history for deal. History works for: " in parsed.stdout + parsed.stderr


@pytest.mark.parametrize(
    ("setting", "value", "line"),
    [
        (
            "PIPEDRIVE_TASK_RETRIES",
            "abc",
            "PIPEDRIVE_TASK_RETRIES must be a whole number of 0 or more (default 2), not 'abc'.",
        ),
        (
            "PIPEDRIVE__KEEP_LOADED_PACKAGES",
            "-1",
            "keep_loaded_packages must be a whole number of 0 or more, not '-1' "
            "(PIPEDRIVE__KEEP_LOADED_PACKAGES, or keep_loaded_packages under [pipedrive]).",
        ),
    ],
    ids=["task_retries", "keep_loaded_packages"],
)
def test_a_setting_the_dag_cannot_take_fails_its_import_with_one_line(
    airflow_env: dict[str, str], setting: str, value: str, line: str
) -> None:
    """`PIPEDRIVE_TASK_RETRIES=abc` failed the import with int()'s traceback, which named no setting; a
    `keep_loaded_packages` the pipeline script refuses with exit 2 was taken without a word."""
    error, _ = dag_import_error({**airflow_env, setting: value})
    assert error.strip().splitlines()[-1] == f"pipedrive_source.failures.SyncFailed: {line}", error


@pytest.mark.parametrize(("settings", "line"), UNUSABLE_DESTINATIONS)
def test_a_destination_the_dag_cannot_load_into_fails_its_import_with_the_script_s_line(
    airflow_env: dict[str, str], settings: dict[str, str], line: str
) -> None:
    """The destination was the DAG file's last line, to edit; chosen by the setting, one that cannot load
    fails the import as the pipeline script fails, in its one line, without dlt's exceptions and without a
    secret (every task of every run failed with it otherwise)."""
    error, output = dag_import_error({**airflow_env, **settings})
    assert error.strip().splitlines()[-1] == f"pipedrive_source.failures.SyncFailed: {line}", error
    assert "dlt.common" not in error and SECRET_OF_UNUSABLE not in output, error


def test_each_company_s_dag_has_the_tables_of_its_entities_setting(airflow_env: dict[str, str]) -> None:
    """The groups synced every default table, whatever `[sources.pipedrive] entities` named, and none of
    the opt-in ones (deal_flow, the followers, ...) could be had at all."""
    env = {
        **airflow_env,
        "PYTHONPATH": str(ROOT / "pipelines"),
        "PIPEDRIVE__COMPANIES": '["acme", "globex"]',
        "SOURCES__PIPEDRIVE__ENTITIES": '["users"]',
        "PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__ENTITIES": '["deal_followers", "organization_relationships"]',
    }
    parsed = subprocess.run(
        [sys.executable, "-c", PARSE], env=env, capture_output=True, text=True, timeout=300
    )
    assert parsed.returncode == 0, parsed.stderr[-3000:]
    result: dict[str, Any] = json.loads(parsed.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    custom = ["custom_fields", "custom_field_options"]
    assert result["companies"] == {
        "acme": {
            "people": ["organizations", "organization_relationships"],
            "deals": ["deals", "deal_followers"],
            "custom_fields": custom,
        },
        "globex": {"lookups": ["users"]},  # users have no custom fields: nothing for custom_fields
    }
    assert set(result["dags"]["pipedrive_globex_sync"]["tasks"]) == {
        "lookups.pipedrive_globex",
        "analyst_views",
    }


def company_env(
    airflow_env: dict[str, str], emulator: EmulatorHandle, tmp_path: Path, **settings: str
) -> dict[str, str]:
    """The Airflow environment with the emulator's company and a DuckDB file of the test's own."""
    return {
        **airflow_env,
        "SOURCES__PIPEDRIVE__API_TOKEN": emulator.api_token,
        "SOURCES__PIPEDRIVE__BASE_URL": emulator.base_url,
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "crm.duckdb"),
        **settings,
    }


def dags_test(env: dict[str, str], workdir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [str(AIRFLOW), "dags", "test", DAG_ID, *options],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=540,
    )
    (workdir / f"dags_test_{len(list(workdir.glob('dags_test_*')))}.log").write_text(run.stdout + run.stderr)
    return run


def task_states(env: dict[str, str]) -> dict[str, str]:
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute(
            "SELECT ti.task_id, ti.state FROM task_instance ti JOIN dag_run dr ON ti.run_id = dr.run_id "
            "WHERE dr.id = (SELECT max(id) FROM dag_run)"
        ).fetchall()
    return dict(rows)


def test_dags_test_loads_the_company_then_its_changes(
    airflow_env: dict[str, str], emulator: EmulatorHandle, tmp_path: Path
) -> None:
    env = company_env(
        airflow_env,
        emulator,
        tmp_path,
        SOURCES__PIPEDRIVE__FULL_READ_INTERVAL_HOURS="0",  # unsortable lists read in full every run
    )
    first = dags_test(env, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    assert set(task_states(env).values()) == {"success"}
    truth = load_truth(emulator, tmp_path, DEFAULT_TABLES)
    problems = {t: p for t in DEFAULT_TABLES if (p := compare(tmp_path / "crm.duckdb", truth, t))}
    assert not problems, {t: p[:3] for t, p in problems.items()}

    task_id = emulator.control.snapshot("tasks")[0]["id"]
    changes = emulator.control.mutate(
        seed=31,
        creates=8,
        updates=25,
        deletes=8,
        archives=3,
        ops=[{"op": "delete", "table": "tasks", "id": task_id}],
    )
    emulator.control.reset_stats()
    second = dags_test(env, tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    assert set(task_states(env).values()) == {"success"}
    per_endpoint = emulator.control.stats()["requests"]
    assert per_endpoint.get("/api/v2/deals", 0) <= 2 and per_endpoint.get("/api/v2/activities", 0) <= 1

    # records an incremental read cannot see disappear (reconcile's job) aside, the tables equal the truth;
    # a deleted task vanished from the full list: the task's after-load step flagged it
    hidden = {
        t for t in changes["deleted"] if BY_NAME[t].strategy in (UPDATED_SINCE, SORTED) and t != "deals"
    }
    truth = load_truth(emulator, tmp_path, DEFAULT_TABLES)
    problems = {
        t: p for t in DEFAULT_TABLES if t not in hidden and (p := compare(tmp_path / "crm.duckdb", truth, t))
    }
    assert not problems, {t: p[:3] for t, p in problems.items()}
    reader = make_pipeline(tmp_path)  # the same DuckDB file, read through a pipeline of our own
    tasks = {row["id"]: row for row in synced_rows(reader, "tasks")}
    assert tasks[task_id]["is_deleted"] is True
    views = synced_rows(reader, "v_deals")
    assert len(views) == sum(1 for d in emulator.control.snapshot("deals") if not d["is_deleted"])


def test_a_budget_stop_fails_its_task_with_the_stopped_early_line(
    airflow_env: dict[str, str], emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """The pipeline script ends a budget stop with exit 3; every task succeeded without a word, the
    products and projects tables were simply missing."""
    env = company_env(airflow_env, emulator, tmp_path)
    emulator.control.reset_ratelimit()
    emulator.control.settings(daily_budget=300)
    try:
        run = dags_test(env, tmp_path)
    finally:
        emulator.control.settings(daily_budget=emulator.settings.daily_budget)
        emulator.control.reset_ratelimit()
    states = task_states(env)
    assert "failed" in states.values(), states
    assert states["fields.pipedrive"] == "success"  # before the budget ran out
    assert "stopped early: Pipedrive's daily API token budget is used up" in run.stdout + run.stderr


def test_an_opt_in_table_of_the_entities_setting_loads(
    airflow_env: dict[str, str], emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Also: a `[pipedrive] history` entity the setting leaves out is said once in the run's log, as the
    pipeline script says it (Airflow dropped it without a word)."""
    env = company_env(
        airflow_env,
        emulator,
        tmp_path,
        SOURCES__PIPEDRIVE__ENTITIES='["deal_participants"]',
        PIPEDRIVE__HISTORY='["deals", "persons"]',
    )
    emulator.control.reset_stats()
    run = dags_test(env, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:]
    notice = (
        "history: no history of persons kept by this run, which does not sync it ([sources.pipedrive] "
        "entities; [pipedrive] history names it)"
    )
    assert (run.stdout + run.stderr).count(notice) == 1, run.stdout[-3000:]
    assert task_states(env) == {
        "deals.pipedrive": "success",
        "custom_fields.pipedrive": "success",
        "analyst_views": "success",
    }
    assert synced_rows(make_pipeline(tmp_path), "deals_history")
    deals = emulator.control.snapshot("deals")
    assert emulator.control.stats()["requests"]["/v1/deals/{id}/participants"] == len(deals)
    reader = make_pipeline(tmp_path)
    assert synced_rows(reader, "deal_participants")
    fields = {row["entity"] for row in synced_rows(reader, "custom_fields")}
    assert fields == {"deals"}  # those of the entities synced, as in the pipeline script


def test_a_failed_task_says_the_pipeline_script_s_line(
    airflow_env: dict[str, str], emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """dlt's exceptions failed the tasks as they were: `PipelineStepFailed` in many lines. Every task that
    syncs fails with the line: the custom_fields task of a DAG whose entities have no custom fields loaded
    nothing, sent no request and succeeded (it is no longer there)."""
    env = company_env(
        airflow_env,
        emulator,
        tmp_path,
        SOURCES__PIPEDRIVE__API_TOKEN="wrong-token",
        SOURCES__PIPEDRIVE__ENTITIES='["users", "persons"]',
    )
    run = dags_test(env, tmp_path)
    states = task_states(env)
    syncing = {task: state for task, state in states.items() if task != "analyst_views"}
    assert syncing == {
        task: "failed" for task in ("lookups.pipedrive", "people.pipedrive", "custom_fields.pipedrive")
    }
    # the exception that failed the task, the last line of its traceback in the task log
    line = (
        "SyncFailed: Pipedrive rejected the API token (HTTP 401 unauthorized). Set a valid token in "
        "SOURCES__PIPEDRIVE__API_TOKEN (or api_token under [sources.pipedrive] in .dlt/secrets.toml)."
    )
    assert (run.stdout + run.stderr).count(line) >= len(syncing), run.stdout[-3000:]
    env["SOURCES__PIPEDRIVE__ENTITIES"] = '["users"]'
    dags_test(env, tmp_path)
    assert task_states(env)["lookups.pipedrive"] == "failed"
    assert "custom_fields.pipedrive" not in task_states(env)


def test_a_load_the_destination_refuses_names_airflow_s_way_out_and_loses_nothing(
    airflow_env: dict[str, str], emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """The task failed with the script's line, which said that every run tries the kept package first and
    named --drop-pending: no task keeps a package (each starts from a fresh working folder), so the next
    run reads the records again, and the line says so; once the destination is fixed they load."""
    env = company_env(airflow_env, emulator, tmp_path, SOURCES__PIPEDRIVE__ENTITIES='["deals"]')
    assert dags_test(env, tmp_path).returncode == 0
    refuse_a_changed_deal(emulator, tmp_path / "crm.duckdb")
    refused = dags_test(env, tmp_path)
    assert task_states(env)["deals.pipedrive"] == "failed"
    log = refused.stdout + refused.stderr
    line = next(line for line in log.splitlines() if "SyncFailed: The destination refused to load" in line)
    assert "table deals of load package" in line and "Conversion Error" in line, line
    assert "every run reads them from Pipedrive again" in line and "--drop-pending" not in line, line
    assert "and run the task again (clear it, or wait for the next DAG run). Nothing is lost." in line, line

    with duckdb.connect(str(tmp_path / "crm.duckdb")) as con:
        con.execute("ALTER TABLE pipedrive.deals ALTER title SET DATA TYPE VARCHAR")
    assert dags_test(env, tmp_path).returncode == 0
    assert set(task_states(env).values()) == {"success"}
    truth = load_truth(emulator, tmp_path, ["deals"])
    assert not compare(tmp_path / "crm.duckdb", truth, "deals")


def test_the_full_refresh_param_starts_the_tables_over(
    airflow_env: dict[str, str], emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """The pipeline script's --full-refresh had no counterpart in Airflow: a table damaged by hand (a row
    deleted here) stayed so, as incremental runs only load changes. The DAG param `full_refresh` reloads
    each group's tables from scratch."""
    env = company_env(airflow_env, emulator, tmp_path, SOURCES__PIPEDRIVE__ENTITIES='["users"]')
    assert dags_test(env, tmp_path).returncode == 0
    db = tmp_path / "crm.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM pipedrive.users WHERE id = (SELECT min(id) FROM pipedrive.users)")
    refreshed = dags_test(env, tmp_path, "--conf", '{"full_refresh": true}')
    assert refreshed.returncode == 0, refreshed.stdout[-3000:]
    assert set(task_states(env).values()) == {"success"}
    with duckdb.connect(str(db), read_only=True) as con:
        users, loads = con.execute(
            "SELECT count(*), count(DISTINCT _dlt_load_id) FROM pipedrive.users"
        ).fetchone()
    assert (users, loads) == (len(emulator.control.snapshot("users")), 1)  # all of them, loaded anew


def test_a_full_refresh_into_postgres_loads_under_the_analyst_views(
    airflow_env: dict[str, str],
    emulator: EmulatorHandle,
    tmp_path: Path,
    postgres: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """Postgres refuses to drop a table a view reads, and dlt's helper runs `pipeline.run`, with no step
    between normalize and load to drop the views as the script and Dagster do: the DAG param full_refresh
    failed the groups whose tables the views read ("cannot drop table ... because other objects depend on
    it") until one dropped the views by hand. Each refreshing task now drops the views reading its tables
    first; `analyst_views` makes them again. Also: the DAG file loads into Postgres as it is, by the
    `destination` setting (the DAG file's last line was edited for it)."""
    env = company_env(
        airflow_env,
        emulator,
        tmp_path,
        PIPEDRIVE__DESTINATION="postgres",
        DESTINATION__POSTGRES__CREDENTIALS=postgres,
        SOURCES__PIPEDRIVE__ENTITIES=json.dumps(VIEW_TABLES.split(",")),
    )
    reader = postgres_reader(postgres, tmp_path / "reader")
    live = {deal["id"] for deal in emulator.control.snapshot("deals") if not deal["is_deleted"]}
    first = dags_test(env, tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    assert {row["deal_id"] for row in synced_rows(reader, "v_deals")} == live

    refreshed = dags_test(env, tmp_path, "--conf", '{"full_refresh": true}')
    assert refreshed.returncode == 0, refreshed.stdout[-3000:]
    assert set(task_states(env).values()) == {"success"}, task_states(env)
    assert {row["deal_id"] for row in synced_rows(reader, "v_deals")} == live
    with reader.sql_client() as client:
        [(loads,)] = client.execute_sql("SELECT count(DISTINCT _dlt_load_id) FROM users")
    assert loads == 1  # started over


AIRFLOW_PROBE = """
import json, os, sys
{first}
import dlt
import pipedrive_source
dlt.pipeline(pipeline_name="probe", destination="duckdb", pipelines_dir=sys.argv[1])
print(json.dumps({{"airflow_imported": "airflow" in sys.modules,
                  "setting": os.environ.get("PROVIDERS__ENABLE_AIRFLOW_SECRETS")}}))
"""


@pytest.mark.parametrize("first", ["", "import airflow"], ids=["outside_airflow", "inside_airflow"])
def test_airflow_is_imported_only_where_it_already_runs(
    airflow_env: dict[str, str], tmp_path: Path, first: str
) -> None:
    """dlt imports an installed Airflow for its secrets provider as a pipeline is made: 90 MB more for every
    sync outside Airflow. The package turns that provider off unless Airflow is already imported (a task)."""
    env = {k: v for k, v in airflow_env.items() if k != "PROVIDERS__ENABLE_AIRFLOW_SECRETS"}
    done = subprocess.run(
        [sys.executable, "-c", AIRFLOW_PROBE.format(first=first), str(tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    if first:
        assert seen == {"airflow_imported": True, "setting": None}  # Airflow's secrets provider stays on
    else:
        assert seen == {"airflow_imported": False, "setting": "false"}


def test_airflow_names_its_dag_param_for_a_history_that_needs_one() -> None:
    """A history that needs a full refresh named the pipeline script's flags in Airflow's failure too: the
    DAG file's ways out name its DAG param."""
    spec = importlib.util.spec_from_file_location(
        "airflow_dag_ways_out", Path(__file__).resolve().parent.parent / "pipelines" / "airflow_dag.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from pipedrive_source.errors import HistoryNeedsRefresh
    from pipedrive_source.failures import failure_of

    said = failure_of(HistoryNeedsRefresh("deals"), module.WAYS_OUT).message
    assert "--full-refresh" not in said
    assert """--conf '{"full_refresh": true}'""" in said
