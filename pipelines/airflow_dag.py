"""Airflow: the Pipedrive sync as a DAG built with dlt's `PipelineTasksGroup`, one task per resource group.

Install the package with the extra into Airflow's environment (`pip install "pipedrive-source[airflow]"`, or
`uv sync --extra airflow` here), copy this file into the dags folder as it is, and give the scheduler and the
workers the settings the dlt way: `SOURCES__PIPEDRIVE__API_TOKEN` (or `.dlt/secrets.toml` in the dags folder,
which dlt's helper makes the project folder), the destination (`PIPEDRIVE__DESTINATION=postgres`, as the
pipeline script's `--destination`; DuckDB without it) and its credentials
(`DESTINATION__DUCKDB__CREDENTIALS=/data/crm.duckdb`), which the DAG's import checks.

One DAG per company (`[pipedrive] companies`, see `pipedrive_source.deployment`), `pipedrive_sync` for the
default one: a task group per resource group (fields, lookups, people, deals, ...) whose task syncs those
tables, then flags records gone from Pipedrive; `analyst_views` refreshes the views at the end. Groups run one
after another (DuckDB has one writer) and each runs even if an earlier one failed (`all_done`). Retries: the
HTTP client retries requests, dlt retries a failed load step (`retry_policy`), Airflow retries the task
(`PIPEDRIVE_TASK_RETRIES` times, default 2). The DAG param `full_refresh` is the pipeline script's
`--full-refresh`, each group starting its own tables over (and first dropping the analyst views that read
them, which Postgres does not drop a table under).
The source is built when the task runs, so the DAG parses without credentials.
A killed task leaves nothing to resume (so no `pipedrive_source.recovery` here): dlt's helper gives each task
a fresh working folder and drops local state first; the next task takes the state of the last completed load
from the destination and reads again from there (merges make that re-read harmless).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context
from airflow.sdk.exceptions import AirflowFailException
from dlt.helpers.airflow_helper import PipelineTasksGroup
from tenacity import Retrying, stop_after_attempt, wait_exponential

ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "pipedrive_source").is_dir() and str(ROOT) not in sys.path:  # run from a checkout of the project
    sys.path.insert(0, str(ROOT))

from pipedrive_source import steps  # noqa: E402
from pipedrive_source.deployment import (  # noqa: E402
    Company,
    Run,
    append_only_notice,
    check_destination_settings,
    company_pipeline,
    configured_companies,
    configured_history,
    entities_setting,
    history_left_out,
    prepare_run,
    synced_tables,
    table_catalog,
    unknown_settings,
)
from pipedrive_source.destinations import loader_file_format  # noqa: E402
from pipedrive_source.entities import BY_NAME  # noqa: E402
from pipedrive_source.errors import ConfigError  # noqa: E402
from pipedrive_source.failures import EXIT_BUDGET, failure_of  # noqa: E402
from pipedrive_source.history import check_history, history_table, not_loaded  # noqa: E402
from pipedrive_source.recovery import WaysOut, configured_keep  # noqa: E402
from pipedrive_source.state_history import prune_state_history  # noqa: E402
from pipedrive_source.views import drop_views_reading, refresh_views  # noqa: E402

SCHEDULE = "0 * * * *"

# Each group holds whole dlt resource groups: a child table (deal_products, the opt-in deal_flow) sits with
# the parent it is read from. Together the groups cover every entity (a test checks it); a company's DAG has
# the tables of its `entities` setting (`deployment.synced_tables`: the defaults without it, opt-in ones
# only where named), and a group none of whose tables it syncs has no task. The connector's custom-field
# tables describe every entity synced at once, so they get a group of their own, after the entities' groups.
RESOURCE_GROUPS: dict[str, tuple[str, ...]] = {
    "fields": (
        "activity_fields",
        "deal_fields",
        "person_fields",
        "organization_fields",
        "product_fields",
        "project_fields",
        "lead_fields",
        "note_fields",
    ),
    "lookups": (
        "users",
        "pipelines",
        "stages",
        "activity_types",
        "currencies",
        "filters",
        "roles",
        "permission_sets",
        "lead_labels",
        "lead_sources",
        "goals",
        "teams",
    ),
    "people": (
        "persons",
        "organizations",
        "person_followers",
        "organization_followers",
        "organization_relationships",
    ),
    "deals": (
        "deals",
        "deal_products",
        "deal_installments",
        "deal_flow",
        "deal_participants",
        "deal_discounts",
        "deal_followers",
    ),
    "leads": ("leads",),
    "activities": ("activities", "notes", "files", "call_logs"),
    "products": ("products", "product_variations", "product_followers"),
    "projects": ("projects", "tasks", "boards", "phases", "project_templates"),
    "custom_fields": ("custom_fields", "custom_field_options"),
}

TASK_RETRIES = "PIPEDRIVE_TASK_RETRIES"  # Airflow's retries of a failed task (default 2)
FULL_REFRESH = "full_refresh"  # the DAG param: the pipeline script's --full-refresh


def default_args() -> dict[str, Any]:
    """The tasks' Airflow arguments; `PIPEDRIVE_TASK_RETRIES` other than a whole number of 0 or more (`abc`,
    `-1`, set empty) fails the DAG's import with a line saying so (it was `int()`'s traceback)."""
    retries = os.environ.get(TASK_RETRIES, "2")
    if not retries.strip().isdigit():
        raise ConfigError(f"{TASK_RETRIES} must be a whole number of 0 or more (default 2), not {retries!r}.")
    return {
        "owner": "data",
        "retries": int(retries),
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
    }


# dlt retries the load step (the destination) inside the task before Airflow retries the whole task
LOAD_RETRY = Retrying(
    stop=stop_after_attempt(3), wait=wait_exponential(multiplier=1.5, min=4, max=30), reraise=True
)


# each task starts from a fresh working folder and removes it (GroupRun), so a package the destination
# refused goes with it and the next run reads its records again: nothing to drop. A history that needs a
# full refresh gets it from the DAG's param (the script's flags do not exist here): every group starts over
WAYS_OUT = WaysOut(
    "run the task again (clear it, or wait for the next DAG run)",
    None,
    lambda entity: (
        f"trigger the DAG once with the param {FULL_REFRESH} (--conf '{{\"{FULL_REFRESH}\": true}}'), which "
        "starts every table of the DAG over, as [pipedrive] history names it; or leave it out of "
        "[pipedrive] history"
    ),
)


class GroupRun:
    """The callables of one group's task: a fresh source when the task runs, the after-load step after it."""

    def __init__(
        self,
        company: Company,
        pipeline: Any,
        tables: Sequence[str],
        history: Sequence[str],
        notices: Sequence[str] = (),
    ) -> None:
        self.company = company
        self.pipeline = pipeline
        self.history = [name for name in history if name in tables]
        self.tables = [*tables, *(history_table(name) for name in self.history)]
        self.notices = notices  # said in the task's log as it runs
        self.run: Run | None = None

    def source(self) -> Any:
        full_refresh = bool(get_current_context()["params"].get(FULL_REFRESH))
        self.run = prepare_run(
            self.pipeline, self.tables, self.history, company=self.company, refresh=full_refresh
        )
        # dlt's helper runs `pipeline.run` without a refresh argument (and after its `drop()`, which resets
        # the pipeline's own): a group is some of the tables, `--full-refresh --entities <its tables>`
        self.pipeline.refresh = steps.refresh_mode(full_refresh, some_tables=True)
        if full_refresh:
            # Postgres refuses to drop a table a view reads, and dlt's `pipeline.run` leaves no place
            # between normalize and load for `steps.run`'s drop: dropped before the run. `analyst_views`
            # (all_done) makes them again, also after a group that failed
            drop_views_reading(self.pipeline, self.tables)
        return self.run.source

    def then_flag_vanished(self, task: Callable[[], Any]) -> Callable[[], None]:
        """`task` (dlt's run), then flag records gone from Pipedrive, then wipe the local working folder (the
        group leaves it to us: the flagging needs the schema the run just saved there). A budget stop then
        fails the task (it succeeded without a word though its tables were not read)."""

        def run_and_flag() -> None:
            for notice in self.notices:
                print(notice, flush=True)
            try:
                with failing_clearly():
                    task()
                    if self.run is not None:
                        self.run.flag_vanished()
                    if notice := append_only_notice(self.pipeline):
                        print(notice)
                    prune_state_history(self.pipeline)  # a state row per task run, never deleted by dlt
            finally:
                shutil.rmtree(self.pipeline.working_dir, ignore_errors=True)
            if self.run is not None and self.run.monitor.stopped:
                # the pipeline script's exit 3: what was read is loaded, the task fails visibly. No retry:
                # the budget resets at Pipedrive's midnight, not within the retries' minutes
                raise AirflowFailException(f"stopped early: {self.run.monitor.stopped}")

        return run_and_flag


@contextmanager
def failing_clearly() -> Iterator[None]:
    """A failure as the pipeline script's one line (`failures.failure_of`: a missing setting, a rejected
    token, ...), the message of the exception that fails the task, where dlt's own said it in dozens of
    lines naming its classes; its traceback stays the cause. The budget running out before anything was
    read fails without retries, as a budget stop does. A load the destination refused names Airflow's way
    out: the script's said to drop a pending package with --drop-pending, but no task keeps one."""
    try:
        yield
    except AirflowFailException:
        raise
    except Exception as exc:
        failure = failure_of(exc, WAYS_OUT)
        if failure.exit_code == EXIT_BUDGET:
            raise AirflowFailException(failure.message) from exc
        raise failure from exc


def sync_dag(
    company: Company, destination: Any = None, history: Sequence[str] = (), schedule: str = SCHEDULE
) -> Any:
    """The DAG of one company, loading into `destination` (None: the company's `destination` setting, DuckDB
    without it; `deployment.configured_destination`)."""
    check_history(history)  # a group keeps the history of its own tables: a typo would match none, unsaid
    # unused here (each task starts from a fresh working folder, keeping no package), but the script and
    # Dagster read the same .dlt/ and refuse such a value: refused alike, not taken without a word
    configured_keep()
    # as the pipeline script says them each run: a misspelt setting's name, history left out
    left_out = not_loaded(table_catalog(company), history)
    notices = unknown_settings()
    if left_out:
        notices.append(history_left_out(left_out, "which does not sync it", entities_setting(company)))

    @dag(
        dag_id=f"{company.pipeline_name}_sync",
        schedule=schedule,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        params={
            FULL_REFRESH: Param(
                False,
                type="boolean",
                description="Drop the tables, their history and their state, and load everything again; "
                "each group starts its own tables over (the pipeline script's --full-refresh --entities).",
            )
        },
        tags=["pipedrive", "dlt"],
        doc_md=__doc__,
    )
    def pipedrive_sync() -> None:
        previous: Any = None
        for group, tables in company_groups(company).items():
            first = previous is None
            said = notices if first else []  # once a run, by its first task
            task = _group_task(company, destination, group, tables, history, said, check=first)
            if previous is not None:
                previous >> task
            previous = task
        views = _views_task(company, destination)
        previous >> views

    return pipedrive_sync()


def _group_task(
    company: Company,
    destination: Any,
    group: str,
    entities: Sequence[str],
    history: Sequence[str],
    notices: Sequence[str],
    check: bool = False,
) -> Any:
    """The task group syncing `entities`; `check`: resolve the destination's settings now, as the DAG is
    parsed (one group per DAG: each resolution takes dlt's configuration and schema again, and the DAG file
    is parsed again every 30 seconds by default)."""
    tasks = PipelineTasksGroup(
        group,
        use_data_folder=False,
        wipe_local_data=False,  # wiped by GroupRun after the after-load step
        retry_policy=LOAD_RETRY,
        retry_pipeline_steps=("load",),
        abort_task_if_any_job_failed=True,
    )
    # created after the group: dlt's helper gives each task group its own temporary working folder
    pipeline = company_pipeline(company, destination)
    if check:  # a destination without its credentials failed every task of every run instead
        check_destination_settings(pipeline)
    run = GroupRun(company, pipeline, entities, history, notices)
    (task,) = tasks.add_run(
        pipeline,
        run.source,  # a callable: the source is built when the task runs
        decompose="none",
        loader_file_format=loader_file_format(pipeline.destination),  # the pipeline script's
        trigger_rule="all_done",
    )
    task.python_callable = run.then_flag_vanished(task.python_callable)
    return tasks


def _views_task(company: Company, destination: Any) -> Any:
    from airflow.providers.standard.operators.python import PythonOperator

    def refresh() -> None:
        pipeline = company_pipeline(company, destination)
        try:
            with failing_clearly():
                report = refresh_views(pipeline)
        finally:
            shutil.rmtree(pipeline.working_dir, ignore_errors=True)
        print(f"views created: {', '.join(report.created) or 'none'}", *report.notices(), sep="\n")

    return PythonOperator(task_id="analyst_views", python_callable=refresh, trigger_rule="all_done")


def company_groups(company: Company) -> dict[str, list[str]]:
    """The resource groups of the company's DAG, each with the tables of it the company syncs (those of the
    `entities` setting, as the pipeline script syncs them); groups without any left out. The custom-field
    tables only where a synced entity has custom fields: their task loaded nothing and, sending no
    request, succeeded with a rejected token."""
    synced = set(synced_tables(company))
    groups = {group: [name for name in tables if name in synced] for group, tables in RESOURCE_GROUPS.items()}
    return {group: tables for group, tables in groups.items() if tables}


def uncovered_entities() -> list[str]:
    """Entities no resource group loads (must be none)."""
    grouped = {name for names in RESOURCE_GROUPS.values() for name in names}
    return [name for name in BY_NAME if name not in grouped]


try:
    for _company in configured_companies():
        globals()[f"{_company.pipeline_name}_sync"] = sync_dag(_company, history=configured_history())
except Exception as exc:
    # a settings file that is no TOML, a company name refused, an unknown destination, its credentials
    # missing: the import error is the script's line to fix it, without dlt's exceptions (dozens of lines)
    raise failure_of(exc) from None
