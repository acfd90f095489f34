"""pipelines/dagster_definitions.py: the definitions load without credentials, and Dagster's own
`materialize` loads the emulator's company into DuckDB table by table (compared row by row with the ground
truth), runs subsets incrementally, refuses a child without its parent, and gives each company its own
group, job and schedule.

Needs the optional extra: `uv sync --extra dagster`."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import dlt
import duckdb
import pytest

dg = pytest.importorskip("dagster", reason="Dagster is an optional extra: uv sync --extra dagster")
dagster_dlt = pytest.importorskip("dagster_dlt", reason="dagster-dlt is in the dagster extra")

from connector_fixtures import (  # noqa: E402
    DEFAULT_TABLES,
    SECRET_OF_UNUSABLE,
    UNUSABLE_DESTINATIONS,
    compare,
    load_truth,
    refuse_a_changed_deal,
    synced_rows,
)
from test_connector_postgres import VIEW_TABLES, postgres, postgres_reader  # noqa: E402, F401 (postgres: a fixture)

from pipedrive_source import pipedrive_source  # noqa: E402
from pipedrive_source.concurrency import FetchPool  # noqa: E402
from pipedrive_source.deployment import Company, company_pipeline  # noqa: E402
from pipedrive_source.emulator import EmulatorHandle  # noqa: E402
from pipedrive_source.errors import ConfigError  # noqa: E402
from pipedrive_source.postgres_load import postgres as postgres_destination  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic v1 shims inside dagster

ROOT = Path(__file__).resolve().parent.parent
VIEW_KEY = dg.AssetKey(["pipedrive", "analyst_views"])


@pytest.fixture(scope="module")
def definitions() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "dagster_definitions", ROOT / "pipelines" / "dagster_definitions.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["dagster_definitions"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def credentials(emulator: EmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> EmulatorHandle:
    monkeypatch.setenv("SOURCES__PIPEDRIVE__API_TOKEN", emulator.api_token)
    monkeypatch.setenv("SOURCES__PIPEDRIVE__BASE_URL", emulator.base_url)
    return emulator


def assets_for(definitions: ModuleType, workdir: Path, **options: Any) -> list[Any]:
    destination = dlt.destinations.duckdb(credentials=str(workdir / "crm.duckdb"))
    return definitions.company_assets(
        Company(), destination=destination, pipelines_dir=str(workdir / "pipelines"), **options
    )


def source_tables() -> set[str]:
    """Every table the source makes by default: one asset each."""
    return set(pipedrive_source(api_token="x", base_url="http://127.0.0.1").resources)


def materialize(
    assets: list[Any],
    selection: list[str] | None = None,
    run_config: dict[str, Any] | None = None,
    instance: Any = None,
) -> Any:
    keys = [dg.AssetKey(["pipedrive", name]) for name in selection] if selection else None
    return dg.materialize(
        assets,
        resources={"dlt": dagster_dlt.DagsterDltResource()},
        selection=keys,
        raise_on_error=False,
        run_config=run_config,
        instance=instance,
    )


def materialized(result: Any) -> dict[Any, Any]:
    return {event.asset_key: event for event in result.get_asset_materialization_events()}


def test_definitions_load_without_credentials(
    definitions: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SOURCES__PIPEDRIVE__API_TOKEN", "SOURCES__PIPEDRIVE__BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    defs = definitions.build_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    assert keys == {dg.AssetKey(["pipedrive", t]) for t in source_tables()} | {VIEW_KEY}
    assert set(DEFAULT_TABLES) <= source_tables()

    def parents(table: str) -> set[str]:
        return {key.path[-1] for key in graph.get(dg.AssetKey(["pipedrive", table])).parent_keys}

    assert {"persons", "organizations", "stages", "pipelines", "users", "deal_fields"} <= parents("deals")
    assert parents("deal_products") == {"deals", "products", "product_variations"}
    assert parents("stages") == {"pipelines"}
    assert {"deals", "stages", "pipelines", "users", "activities", "leads"} <= {
        key.path[-1] for key in graph.get(VIEW_KEY).parent_keys
    }
    assert {graph.get(key).group_name for key in keys} == {"pipedrive"}
    (schedule,) = defs.schedules
    assert schedule.cron_schedule == "0 * * * *" and schedule.job.name == "pipedrive_sync"


def test_loading_the_definitions_requests_nothing(
    definitions: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asset catalog's source once fetched field definitions from its placeholder URL as it was built
    (retried for 20 s in the background of every load, and of every Dagster step process)."""
    submitted: list[Any] = []
    monkeypatch.setattr(FetchPool, "submit", lambda pool, task: submitted.append(task))
    defs = definitions.build_definitions(companies=[Company(), Company("acme")])
    assert dg.AssetKey(["acme", "custom_fields"]) in defs.resolve_asset_graph().get_all_asset_keys()
    assert submitted == []


def test_materializing_every_asset_loads_the_company(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    result = materialize(assets_for(definitions, tmp_path))
    assert result.success
    events = materialized(result)
    assert set(events) == {dg.AssetKey(["pipedrive", t]) for t in source_tables()} | {VIEW_KEY}
    deals = credentials.control.snapshot("deals")
    assert events[dg.AssetKey(["pipedrive", "deals"])].materialization.metadata["rows_loaded"].value == len(
        deals
    )

    truth = load_truth(credentials, tmp_path, DEFAULT_TABLES)
    problems = {t: p for t in DEFAULT_TABLES if (p := compare(tmp_path / "crm.duckdb", truth, t))}
    assert not problems, {t: p[:3] for t, p in problems.items()}

    pipeline = dlt.pipeline(
        "pipedrive",
        destination=dlt.destinations.duckdb(credentials=str(tmp_path / "crm.duckdb")),
        dataset_name="pipedrive",
        pipelines_dir=str(tmp_path / "other"),
    )
    open_value = sum(r["open_value"] for r in synced_rows(pipeline, "v_open_pipeline_by_stage"))
    want = sum(
        d["value"] for d in deals if d["status"] == "open" and not d["is_deleted"] and not d["is_archived"]
    )
    assert open_value == pytest.approx(want)


def test_a_subset_loads_only_its_tables_and_incrementally(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    assets = assets_for(definitions, tmp_path, history=["deals"])
    subset = [
        "deals",
        "deal_products",
        "deals_history",
        "custom_fields",
    ]  # custom_fields: how columns are named
    assert materialize(assets, subset).success
    changes = credentials.control.mutate(seed=21, updates=20)
    credentials.control.reset_stats()
    result = materialize(assets, subset)
    assert result.success
    assert set(materialized(result)) == {dg.AssetKey(["pipedrive", t]) for t in subset}
    requested = set(credentials.control.stats()["requests"]) - {"/v1/users/me"}  # the company check
    assert requested == {
        "/api/v2/deals",
        "/api/v2/deals/archived",
        "/api/v2/deals/products",
        "/api/v2/dealFields",
    }
    changed = set(changes["updated"].get("deals", []))
    metadata = materialized(result)[dg.AssetKey(["pipedrive", "deals"])].materialization.metadata
    assert metadata["rows_loaded"].value == len(changed)  # only the changed deals travelled
    truth = load_truth(credentials, tmp_path, ["deals", "deal_products"])
    assert not compare(tmp_path / "crm.duckdb", truth, "deals")
    assert not compare(tmp_path / "crm.duckdb", truth, "deal_products")


def test_a_child_table_without_its_parent_fails_with_a_clear_message(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    result = materialize(assets_for(definitions, tmp_path), ["deal_products"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "deal_products is loaded from the deals changed in the same run" in str(
        failure.event_specific_data
    )
    assert not (tmp_path / "crm.duckdb").exists()  # nothing ran


def test_a_budget_stop_fails_the_step_after_materializing_what_was_loaded(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """The pipeline script ends a budget stop with exit 3 and `stopped early: ...`; the materialization
    succeeded without a word, though most tables were not read."""
    credentials.control.reset_ratelimit()
    credentials.control.settings(daily_budget=300)
    try:
        result = materialize(assets_for(definitions, tmp_path))
    finally:
        credentials.control.settings(daily_budget=credentials.settings.daily_budget)
        credentials.control.reset_ratelimit()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "stopped early: Pipedrive's daily API token budget is used up" in str(failure.event_specific_data)
    assert materialized(result)  # what was read is loaded and shown as such


def test_a_selection_pipedrive_refuses_entirely_fails_the_step(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """The pipeline script's exit 2: every selected table refused (403 here) is no successful sync."""
    credentials.control.settings(forbidden="/v1/users")
    try:
        result = materialize(assets_for(definitions, tmp_path), ["users"])
    finally:
        credentials.control.settings(forbidden="")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "Pipedrive refused every table this run asked for (users)" in str(failure.event_specific_data)


def test_a_named_company_without_its_own_token_fails_before_reading(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """Only [sources.pipedrive] credentials (here their env variables): company `initech` must not sync
    with them (another company's data in its dataset)."""
    destination = dlt.destinations.duckdb(credentials=str(tmp_path / "crm.duckdb"))
    assets = definitions.company_assets(
        Company("initech"), destination=destination, pipelines_dir=str(tmp_path / "pipelines")
    )
    credentials.control.reset_stats()
    result = dg.materialize(
        assets,
        resources={"dlt": dagster_dlt.DagsterDltResource()},
        selection=[dg.AssetKey(["initech", "users"])],
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "PIPEDRIVE_INITECH__SOURCES__PIPEDRIVE__API_TOKEN" in str(failure.event_specific_data)
    assert credentials.control.stats()["total_requests"] == 0
    assert not (tmp_path / "crm.duckdb").exists()


def test_each_company_gets_its_own_group_job_and_schedule(definitions: ModuleType) -> None:
    defs = definitions.build_definitions(companies=[Company("acme"), Company("globex")], cron="15 6 * * *")
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {"pipedrive_acme", "pipedrive_globex"}
    assert dg.AssetKey(["acme", "deals"]) in graph.get_all_asset_keys()
    assert {s.job.name: s.cron_schedule for s in defs.schedules} == {
        "pipedrive_acme_sync": "15 6 * * *",
        "pipedrive_globex_sync": "15 6 * * *",
    }


def test_history_left_out_of_a_run_is_said_in_its_log(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """`[pipedrive] history` narrowed to the selected tables without a word, where the pipeline script says
    `history: no history of deals kept by this run, ...`; a name that cannot have a history was dropped too
    (the script stops with exit 2)."""
    assets = assets_for(definitions, tmp_path, history=["deals", "persons"])
    warnings = event_log_warnings(assets, ["persons", "users"])
    assert (
        "history: no history of deals kept by this run, which does not sync it (the selected assets; "
        "[pipedrive] history names it)" in warnings
    )
    assert any(
        w.startswith("history: no history of persons kept by this run, which syncs it without")
        for w in warnings
    )
    with pytest.raises(ConfigError, match="No history for deal_products"):
        assets_for(definitions, tmp_path, history=["deal_products"])


def test_the_assets_are_the_tables_of_the_entities_setting_per_company(
    definitions: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[sources.pipedrive] entities` (and a company's own) pick the tables as for the pipeline script:
    the assets were always the default tables, opt-in ones could not be had."""
    monkeypatch.setenv("SOURCES__PIPEDRIVE__ENTITIES", '["deals", "deal_participants"]')
    monkeypatch.setenv("PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__ENTITIES", '["product_followers"]')
    defs = definitions.build_definitions(companies=[Company(), Company("acme")])
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    made = {"custom_fields", "custom_field_options", "analyst_views"}
    assert {tuple(key.path) for key in keys} == {
        *(("pipedrive", t) for t in {"deals", "deal_participants", *made}),
        *(("acme", t) for t in {"products", "product_followers", *made}),
    }


def test_materializing_the_assets_of_the_entities_setting_loads_an_opt_in_table(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCES__PIPEDRIVE__ENTITIES", '["stages", "product_followers"]')
    credentials.control.reset_stats()
    result = materialize(assets_for(definitions, tmp_path))
    assert result.success
    tables = {"stages", "products", "product_followers", "custom_fields", "custom_field_options"}
    assert set(materialized(result)) == {dg.AssetKey(["pipedrive", t]) for t in tables} | {VIEW_KEY}
    requests = credentials.control.stats()["requests"]
    assert requests["/api/v2/products/{id}/followers"] == len(credentials.control.snapshot("products"))
    assert "/api/v2/deals" not in requests
    reader = dlt.pipeline(
        "reader",
        destination=dlt.destinations.duckdb(credentials=str(tmp_path / "crm.duckdb")),
        dataset_name="pipedrive",
        pipelines_dir=str(tmp_path / "other"),
    )
    fields = {row["entity"] for row in synced_rows(reader, "custom_fields")}
    assert fields == {"products"}  # the custom fields of the entities synced, as in the script


def step_failure_message(result: Any) -> str:
    """The message of the failed step's error, without its causes (which hold dlt's own wording)."""
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(failure.event_specific_data.error.message).strip()


def test_a_failed_run_says_the_pipeline_script_s_line(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlt's exceptions went out as they were: the step's error was dlt's `PipelineStepFailed` in many
    lines, or a list of every place dlt looked for a missing setting."""
    monkeypatch.setenv("SOURCES__PIPEDRIVE__API_TOKEN", "wrong-token")
    result = materialize(assets_for(definitions, tmp_path), ["users"])
    assert not result.success
    message = step_failure_message(result)
    assert message.endswith(
        "Pipedrive rejected the API token (HTTP 401 unauthorized). Set a valid token in "
        "SOURCES__PIPEDRIVE__API_TOKEN (or api_token under [sources.pipedrive] in .dlt/secrets.toml)."
    ), message
    assert "wrong-token" not in message
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.event_specific_data.error.cause is not None  # dlt's exception, for what the line omits

    # the destination's settings, there as the definitions loaded, gone when the run starts
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", "postgresql://loader:pw@127.0.0.1:9/crm")
    assets = definitions.company_assets(
        Company(), destination="postgres", pipelines_dir=str(tmp_path / "pipelines")
    )
    for name in [key for key in os.environ if key.startswith("DESTINATION__POSTGRES")]:
        monkeypatch.delenv(name)
    result = materialize(assets, ["users"])
    message = step_failure_message(result)
    assert "Missing settings DESTINATION__POSTGRES__CREDENTIALS__" in message
    assert message.splitlines()[-1].endswith("(a connection string for SQL databases)."), message


@pytest.mark.parametrize(("settings", "line"), UNUSABLE_DESTINATIONS)
def test_definitions_whose_destination_cannot_load_fail_to_load_with_the_script_s_line(
    tmp_path: Path, settings: dict[str, str], line: str
) -> None:
    """The destination was code only (`build_definitions(destination=...)`); chosen by the setting, one that
    cannot load fails the definitions as the pipeline script fails, in its one line, without dlt's
    exceptions and without a secret (every run's step failed with it otherwise)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "PIPEDRIVE", "DESTINATION"))}
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import runpy; runpy.run_path({str(ROOT / 'pipelines' / 'dagster_definitions.py')!r})",
        ],
        cwd=tmp_path,
        env={**env, **settings, "DLT_DATA_DIR": str(tmp_path / "dlt")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode != 0
    assert loaded.stderr.strip().splitlines()[-1] == f"pipedrive_source.failures.SyncFailed: {line}"
    shown = loaded.stderr
    assert "dlt.common" not in shown and SECRET_OF_UNUSABLE not in shown, shown[-3000:]


def test_the_destination_setting_loads_the_assets_into_postgres(
    definitions: ModuleType,
    emulator: EmulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """A company's `destination` setting (here `[pipedrive_pg.pipedrive] destination = "postgres"` by its
    variable) with the server's credentials: the definitions load into Postgres, as the pipeline script's
    --destination postgres does; the destination was code only."""
    monkeypatch.setenv("PIPEDRIVE__COMPANIES", '["pg"]')
    monkeypatch.setenv("PIPEDRIVE_PG__PIPEDRIVE__DESTINATION", "postgres")
    monkeypatch.setenv("PIPEDRIVE_PG__SOURCES__PIPEDRIVE__API_TOKEN", emulator.api_token)
    monkeypatch.setenv("PIPEDRIVE_PG__SOURCES__PIPEDRIVE__BASE_URL", emulator.base_url)
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", postgres)
    defs = definitions.build_definitions(pipelines_dir=str(tmp_path / "pipelines"))
    result = dg.materialize(
        [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
        resources={"dlt": dagster_dlt.DagsterDltResource()},
        selection=[dg.AssetKey(["pg", "users"])],
        raise_on_error=False,
    )
    assert result.success, step_failure_message(result)
    reader = dlt.pipeline(
        "reader_pg",
        destination=postgres_destination(postgres),
        dataset_name="pipedrive_pg",
        pipelines_dir=str(tmp_path / "reader"),
    )
    users = {user["id"] for user in emulator.control.snapshot("users")}
    assert {row["id"] for row in synced_rows(reader, "users")} == users


def test_definitions_that_cannot_load_say_the_pipeline_script_s_line(tmp_path: Path) -> None:
    """A `.dlt/config.toml` that is no TOML failed the definitions load with dlt's exception."""
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text('[pipedrive]\ncompanies = ["acme"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "PIPEDRIVE"))}
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import runpy; runpy.run_path({str(ROOT / 'pipelines' / 'dagster_definitions.py')!r})",
        ],
        cwd=tmp_path,
        env={**env, "DLT_PROJECT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode != 0
    last = [line for line in loaded.stderr.splitlines() if line.startswith("pipedrive_source.failures.")]
    assert last and "/.dlt/config.toml is not valid TOML: " in last[-1], loaded.stderr[-2000:]


def test_the_connector_s_warnings_reach_the_run_s_event_log(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """A warning of the connector's loggers (here: a history started on notes loaded before) reached only
    the raw compute logs, not the run's event log where the rest of the run's notices are."""
    assert materialize(assets_for(definitions, tmp_path), ["notes"]).success
    warnings = event_log_warnings(
        assets_for(definitions, tmp_path, history=["notes"]), ["notes", "notes_history"]
    )
    starts = [w for w in warnings if w.startswith("notes_history starts with the notes that change from now")]
    assert len(starts) == 1, warnings


def test_a_full_refresh_that_fills_a_history_does_not_warn_it_starts_later(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """The run config full_refresh gives a history started on notes loaded before every record, yet its run
    warned that the history "starts with the notes that change from now on" and to run a full refresh."""
    assert materialize(assets_for(definitions, tmp_path), ["notes"]).success
    instance = dg.DagsterInstance.ephemeral()
    refresh = {"ops": {"pipedrive_tables": {"config": {"full_refresh": True}}}}
    assets = assets_for(definitions, tmp_path, history=["notes"])
    result = materialize(assets, ["notes", "notes_history"], run_config=refresh, instance=instance)
    assert result.success
    logged = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert not [w for w in logged if "starts with" in w], logged
    reader = dlt.pipeline(
        "reader",
        destination=dlt.destinations.duckdb(credentials=str(tmp_path / "crm.duckdb")),
        dataset_name="pipedrive",
        pipelines_dir=str(tmp_path / "other"),
    )
    assert len(synced_rows(reader, "notes_history")) == len(credentials.control.snapshot("notes"))


def event_log_warnings(assets: Any, names: list[str]) -> list[str]:
    """The warnings in the event log of a successful materialization of `names`."""
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(assets, names, instance=instance)
    assert result.success
    return [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]


def test_a_load_the_destination_refuses_names_dagster_s_ways_out_and_the_run_config_drops_it(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """A package the destination refused stays pending and every later materialization failed on it; the
    step's error named the script's --drop-pending, which Dagster has not: the run config drop_pending
    drops it there, and its records are read again. The raw compute logs held dlt's tracebacks of the job
    (twice) and the step's causes (dlt's exceptions, the destination's error five times over, telling to
    run `pipeline.load()`), where the script prints its line alone."""
    assets = assets_for(definitions, tmp_path)
    tables = ["deals", "custom_fields"]
    assert materialize(assets, tables).success
    refuse_a_changed_deal(credentials, tmp_path / "crm.duckdb")
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as logged:
        refused = materialize(assets, tables, instance=logged)
    message = step_failure_message(refused)
    failure = next(e for e in refused.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.event_specific_data.error.cause is None
    (raw,) = [path for path in (tmp_path / "dagster").rglob("*.err") if refused.run_id in str(path)]
    logs = raw.read_text()
    assert "The destination refused to load table deals of load package" in logs
    assert "Traceback" not in logs and "pipeline.load()" not in logs, logs[-3000:]
    config = {"ops": {"pipedrive_tables": {"config": {"drop_pending": True}}}}
    assert "The destination refused to load table deals of load package " in message
    assert "Conversion Error" in message and "--drop-pending" not in message
    assert (
        "and materialize the assets again; or materialize them once with the run config "
        '{"ops": {"pipedrive_tables": {"config": {"drop_pending": true}}}} to drop the package'
    ) in message, message
    served = credentials.control.stats()["total_requests"]
    assert step_failure_message(materialize(assets, tables)) == message  # tried once again, nothing read
    assert credentials.control.stats()["total_requests"] == served

    with duckdb.connect(str(tmp_path / "crm.duckdb")) as con:
        con.execute("ALTER TABLE pipedrive.deals ALTER title SET DATA TYPE VARCHAR")
    package = message.split("load package ")[1].split(":")[0]
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(assets, tables, run_config=config, instance=instance)
    assert result.success
    logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith(f"dropped 1 pending load package(s) ({package})") for m in logged), logged
    truth = load_truth(credentials, tmp_path, ["deals"])
    assert not compare(tmp_path / "crm.duckdb", truth, "deals")


def test_a_pending_package_and_a_duckdb_folder_gone_say_the_pipeline_script_s_line(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """Dagster finished the pending package before it checked the destination, where the script checks
    first: with the DuckDB file's folder gone, the step's error was DuckDB's "Cannot open file"."""
    folder = tmp_path / "warehouse"
    folder.mkdir()
    destination = dlt.destinations.duckdb(credentials=str(folder / "crm.duckdb"))
    pipelines_dir = str(tmp_path / "pipelines")
    assets = definitions.company_assets(Company(), destination=destination, pipelines_dir=pipelines_dir)
    assert materialize(assets, ["users"]).success
    pending = company_pipeline(Company(), destination, pipelines_dir)
    pending.extract([{"id": 1}], table_name="users")  # a run killed after its extract: a package pending
    pending.normalize()
    assert pending.has_pending_data
    shutil.rmtree(folder)
    message = step_failure_message(materialize(assets, ["users"]))
    assert message.splitlines()[-1].endswith(
        f"The folder of the DuckDB file {folder / 'crm.duckdb'}, {folder} does not exist: create it, or set "
        "DESTINATION__DUCKDB__CREDENTIALS to a file in a folder that exists."
    ), message


def test_definitions_loaded_from_another_folder_read_the_checkout_s_settings(tmp_path: Path) -> None:
    """`dagster dev -f /srv/pipedrive/pipelines/dagster_definitions.py` from a folder without a .dlt/ read
    no settings at all (the companies, the entities: dlt reads .dlt/ of the current folder only), where the
    pipeline script reads the .dlt/ of its checkout."""
    checkout = tmp_path / "checkout"
    (checkout / "pipelines").mkdir(parents=True)
    (checkout / ".dlt").mkdir()
    (checkout / ".dlt" / "config.toml").write_text('[pipedrive]\ncompanies = ["acme"]\n')
    definitions = checkout / "pipelines" / "dagster_definitions.py"
    definitions.write_text((ROOT / "pipelines" / "dagster_definitions.py").read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "PIPEDRIVE", "DLT_PROJECT"))}
    groups = (
        "import runpy; defs = runpy.run_path({path!r})['defs']; "
        "graph = defs.resolve_asset_graph(); "
        "print(sorted({{graph.get(key).group_name for key in graph.get_all_asset_keys()}}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", groups.format(path=str(definitions))],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip().splitlines()[-1] == "['pipedrive_acme']", loaded.stdout[-2000:]


def test_the_run_config_full_refresh_starts_the_selected_tables_over(
    definitions: ModuleType, credentials: EmulatorHandle, tmp_path: Path
) -> None:
    """The pipeline script's --full-refresh had no counterpart in Dagster: a table damaged by hand (a row
    deleted here) stayed so, as incremental runs only read changes. The run config `full_refresh` reloads
    the selected tables from scratch, as `--full-refresh --entities` does, and leaves the others as they
    are."""
    assets = assets_for(definitions, tmp_path)
    assert materialize(assets, ["users", "deals", "custom_fields"]).success  # custom_fields: column names
    db = tmp_path / "crm.duckdb"
    with duckdb.connect(str(db)) as con:
        for table in ("users", "deals"):
            con.execute(f"DELETE FROM pipedrive.{table} WHERE id = (SELECT min(id) FROM pipedrive.{table})")
    config = {"ops": {"pipedrive_tables": {"config": {"full_refresh": True}}}}
    result = materialize(assets, ["deals", "custom_fields"], run_config=config)
    assert result.success
    deals = credentials.control.snapshot("deals")
    metadata = materialized(result)[dg.AssetKey(["pipedrive", "deals"])].materialization.metadata
    assert metadata["rows_loaded"].value == len(deals)  # every deal read again
    assert not compare(db, load_truth(credentials, tmp_path, ["deals"]), "deals")
    with duckdb.connect(str(db), read_only=True) as con:
        (users,) = con.execute("SELECT count(*) FROM pipedrive.users").fetchone()
    assert users == len(credentials.control.snapshot("users")) - 1  # not selected: left as it was


def test_a_full_refresh_loads_under_the_analyst_views_into_postgres(
    definitions: ModuleType,
    credentials: EmulatorHandle,
    tmp_path: Path,
    postgres: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """Postgres refuses to drop a table a view reads: dagster-dlt's `run` loads without the script's step
    that drops the analyst views before a load that drops tables, so a full refresh failed there ("cannot
    drop table deals because other objects depend on it"). The assets load through the script's steps."""
    assets = definitions.company_assets(
        Company(), destination=dlt.destinations.postgres(credentials=postgres), pipelines_dir=str(tmp_path)
    )
    tables = [*VIEW_TABLES.split(","), "custom_fields", VIEW_KEY.path[-1]]
    assert materialize(assets, tables).success
    refresh = {"ops": {"pipedrive_tables": {"config": {"full_refresh": True}}}}
    refreshed = materialize(assets, tables, run_config=refresh)
    assert refreshed.success, step_failure_message(refreshed)
    reader = postgres_reader(postgres, tmp_path / "other")
    live = {deal["id"] for deal in credentials.control.snapshot("deals") if not deal["is_deleted"]}
    assert {row["deal_id"] for row in synced_rows(reader, "v_deals")} == live
