"""Dagster: every Pipedrive table as an asset (dagster-dlt), the analyst views downstream, an hourly schedule.

    uv sync --extra dagster
    uv run dagster dev -f pipelines/dagster_definitions.py

Per company (see `pipedrive_source.deployment`): one asset per table of its `entities` setting (the default
tables without it; opt-in ones where named), as the pipeline script syncs them, keyed `[company, table]`, in
the group named after the company's pipeline, each depending on the tables it references (deals on persons,
stages, users, ...); an `analyst_views` asset after them; a job `<pipeline>_sync` over the group and its
schedule (hourly, UTC). Materializing a subset of tables loads just those; a child table (deal_products,
deals_history, ...) needs its parent in the same run because its rows come from the parent's changed records.

Definitions load without Pipedrive credentials: they are read when a run starts, the dlt way
(`.dlt/secrets.toml`, env `SOURCES__PIPEDRIVE__API_TOKEN`, or
`PIPEDRIVE_<COMPANY>__SOURCES__PIPEDRIVE__API_TOKEN` per company). The destination is a setting
(`[pipedrive] destination = "postgres"`, env `PIPEDRIVE__DESTINATION`, as the pipeline script's
`--destination`; DuckDB without it), whose credentials the definitions check as they load.
"""

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import dagster as dg
import dlt
from dagster import AssetExecutionContext
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.common.pipeline import LoadInfo
from pydantic import Field

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # loaded with `dagster dev -f`: the package lives next to this folder
    sys.path.insert(0, str(ROOT))

from pipedrive_source import steps  # noqa: E402
from pipedrive_source.deletions import flag_vanished  # noqa: E402
from pipedrive_source.deployment import (  # noqa: E402
    Company,
    Run,
    append_only_notice,
    check_and_recover,
    check_destination_settings,
    company_pipeline,
    configured_companies,
    configured_history,
    history_left_out,
    prepare_run,
    read_settings_of_checkout,
    table_catalog,
    unknown_settings,
)
from pipedrive_source.entities import BY_NAME, DEAL_BATCH, PER_RECORD  # noqa: E402
from pipedrive_source.failures import failure_of, root_cause  # noqa: E402
from pipedrive_source.history import SUFFIX, add_history, history_table  # noqa: E402
from pipedrive_source.recovery import (  # noqa: E402
    SCRIPT_WAYS_OUT,
    LoadRefused,
    WaysOut,
    hide_terminal_job_logs,
)
from pipedrive_source.relations import upstream  # noqa: E402
from pipedrive_source.views import VIEWS, refresh_views  # noqa: E402

SCHEDULE = "0 * * * *"  # hourly; a run without changes costs about one request per entity
VIEWS_ASSET = "analyst_views"


class PipedriveTranslator(DagsterDltTranslator):
    """Asset `[company, table]`, grouped per company, with the tables it references as upstream assets."""

    def __init__(self, company: Company, tables: Sequence[str]) -> None:
        self.company = company
        self.tables = set(tables)

    def key(self, table: str) -> dg.AssetKey:
        return dg.AssetKey([self.company.name, table])

    def get_asset_spec(self, data: DltResourceTranslatorData) -> dg.AssetSpec:
        table = data.resource.name
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(
            key=self.key(table),
            deps=[self.key(name) for name in parents(table) if name in self.tables],
            group_name=self.company.pipeline_name,
            description=describe(table),
        )


def parents(table: str) -> list[str]:
    if table.endswith(SUFFIX):
        return [table.removesuffix(SUFFIX)]
    if table not in BY_NAME:  # custom_fields, custom_field_options: made from the *_fields tables
        return [name for name in BY_NAME if name.endswith("_fields")]
    return upstream(table)


def describe(table: str) -> str:
    if table.endswith(SUFFIX):
        return f"SCD2 history of {table.removesuffix(SUFFIX)} (one row per version seen by a sync)."
    if table not in BY_NAME:
        return f"{table}: made by the connector from the field definitions (see docs/tables.md)."
    entity = BY_NAME[table]
    paths = ", ".join(listing.path for listing in entity.listings)
    return f"Pipedrive {table} ({entity.api}: {paths}). {entity.notes}".strip()


def feeding_parent(table: str) -> str | None:
    """The table whose changed records a child's rows come from (dlt transformers need their parent)."""
    if table.endswith(SUFFIX):
        return table.removesuffix(SUFFIX)
    entity = BY_NAME.get(table)
    if entity is None:
        return None
    return entity.parent if entity.strategy in (DEAL_BATCH, PER_RECORD) else None


def reattach(pipeline: dlt.Pipeline) -> dlt.Pipeline:
    """The pipeline as saved by its last run. dagster-dlt's metadata step pops `name` and `data_type` out of
    the live schema's columns (DagsterDltResource._extract_table_schema_metadata), so queries through that
    schema object fail afterwards; the copy on disk is intact."""
    return dlt.attach(
        pipeline_name=pipeline.pipeline_name,
        pipelines_dir=pipeline.pipelines_dir,
        destination=pipeline.destination,
        dataset_name=pipeline.dataset_name,
    )


def materializations(
    context: AssetExecutionContext,
    resource: DagsterDltResource,
    translator: PipedriveTranslator,
    run: Run,
    info: LoadInfo,
) -> list[dg.MaterializeResult]:
    """A result per table `run` loaded, with dagster-dlt's metadata (rows loaded, jobs, columns) of the
    load `info`, as `DagsterDltResource.run` makes them; read from the saved pipeline (`reattach`: the
    metadata step takes the live schema apart, which the next run in this process would load with)."""
    saved = reattach(run.pipeline)
    return [
        dg.MaterializeResult(
            asset_key=translator.key(name),
            metadata=resource.extract_resource_metadata(context, table, info, saved),
        )
        for name, table in run.source.selected_resources.items()
    ]


def in_dependency_order(results: list[Any]) -> list[Any]:
    """Dagster wants a multi-asset's results upstream first; dlt reports them in the source's order."""
    by_table = {result.asset_key.path[-1]: result for result in results}
    graph = {table: [p for p in parents(table) if p in by_table] for table in by_table}
    return [by_table[table] for table in TopologicalSorter(graph).static_order()]


def asset_catalog(company: Company, entities: Sequence[str] | None, history: Sequence[str]) -> Any:
    """A source that only describes the company's tables (names, keys) for the asset specs; runs build their
    own. The tables of `entities`, else of the `entities` setting, as the pipeline script syncs them, with
    the custom-field tables (`deployment.table_catalog`: nothing requested)."""
    source = table_catalog(company, entities, custom_fields=True)
    add_history(source, history)  # for the entities of the catalog
    return source


def history_notices(history: Sequence[str], selected: Sequence[str]) -> list[str]:
    """What the pipeline script says of `[pipedrive] history` entities a run does not sync, for a
    materialization of `selected` tables; also of an entity selected without its history table."""
    unsynced = [name for name in history if name not in selected]
    bare = [name for name in history if name in selected and history_table(name) not in selected]
    where = "the selected assets"
    notices = [history_left_out(unsynced, "which does not sync it", where)] if unsynced else []
    if bare:
        reason = f"which syncs it without {', '.join(map(history_table, bare))}"
        notices.append(history_left_out(bare, reason, where))
    return notices


class RunLogHandler(logging.Handler):
    """Records of the connector's loggers into a Dagster run's log (`context.log`), as Dagster's own
    `managed_python_loggers` would, from any thread the sync reads in."""

    def __init__(self, run_log: Any) -> None:
        super().__init__(logging.WARNING)
        self.run_log = run_log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.run_log.log(record.levelno, record.getMessage())
        except Exception:
            self.handleError(record)


@contextmanager
def connector_logs_to(context: AssetExecutionContext) -> Iterator[None]:
    """The connector's warnings (a history's start, an unknown option id, a table skipped, ...) in the run's
    event log while a sync runs: they reached only the raw compute logs, where the pipeline script prints
    them with its own output."""
    logger = logging.getLogger("pipedrive_source")
    handler = RunLogHandler(context.log)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class SyncConfig(dg.Config):
    """Run config of a company's tables (the op `<pipeline>_tables`)."""

    drop_pending: bool = Field(
        default=False,
        description="Drop the load package the destination refused (the step's error says when) and read "
        "its records from Pipedrive again; the pipeline script's --drop-pending.",
    )
    full_refresh: bool = Field(
        default=False,
        description="Drop the tables, their history and their state, and load everything; the pipeline "
        "script's --full-refresh. A subset of the assets starts only those tables over (--entities).",
    )


def run_config(company: Company, option: str) -> str:
    """The run config that sets `option` of `SyncConfig` true for the company's op, as JSON."""
    return json.dumps({"ops": {f"{company.pipeline_name}_tables": {"config": {option: True}}}})


def ways_out(company: Company) -> WaysOut:
    """A failure's ways out in Dagster: for a refused load the run config that drops the package, for a
    history that needs a full refresh the run config of one (the script's flags do not exist here)."""

    def refresh(entity: str) -> str:
        return (
            f"materialize the assets {entity} and {history_table(entity)} alone once with the run config "
            f"{run_config(company, 'full_refresh')}, as [pipedrive] history names it; or leave it out of "
            "[pipedrive] history"
        )

    drop = f"materialize them once with the run config {run_config(company, 'drop_pending')}"
    return WaysOut("materialize the assets again", drop, refresh)


@contextmanager
def failing_clearly(refused_load: WaysOut = SCRIPT_WAYS_OUT) -> Iterator[None]:
    """A failure as the pipeline script's one line (`failures.failure_of`: a missing setting, a rejected
    token, ...), as the message of the step's failure, where dlt's own exception said it in dozens of lines
    naming its classes, or not at all (a settings file that is no TOML); its traceback stays the cause.
    `refused_load`: the ways out a load the destination refused names (the script's said --drop-pending).

    A load the destination refused is its line alone, as the script (without --verbose) says it: dlt logged
    the job's traceback twice into the raw compute logs, and its exceptions, the step's causes, said the
    destination's error five times over and to run `pipeline.load()`, which is no way out in Dagster. Its
    line names the table, the package and the destination's error; tracebacks of anything else stay."""
    hide_terminal_job_logs(True)
    try:
        yield
    except dg.Failure:
        raise
    except Exception as exc:
        cause = None if isinstance(root_cause(exc), LoadRefused) else exc
        raise dg.Failure(description=failure_of(exc, refused_load).message) from cause
    finally:
        hide_terminal_job_logs(False)


def company_assets(
    company: Company,
    destination: Any = None,
    pipelines_dir: str | None = None,
    entities: Sequence[str] | None = None,
    history: Sequence[str] = (),
    source_options: dict[str, Any] | None = None,
) -> list[dg.AssetsDefinition]:
    """The table assets and the views asset of one company, loading into `destination` (None: the company's
    `destination` setting, DuckDB without it; `deployment.configured_destination`)."""
    pipeline = company_pipeline(company, destination, pipelines_dir)
    # as the definitions load: a destination without its credentials failed every run's step instead
    check_destination_settings(pipeline)
    catalog = asset_catalog(company, entities, history)
    translator = PipedriveTranslator(company, list(catalog.resources))

    @dlt_assets(
        dlt_source=catalog,
        dlt_pipeline=pipeline,
        name=f"{company.pipeline_name}_tables",
        dagster_dlt_translator=translator,
    )
    def tables(context: AssetExecutionContext, dlt: DagsterDltResource, config: SyncConfig) -> Iterator[Any]:
        selected = [key.path[-1] for key in context.selected_asset_keys]
        orphans = {t: p for t in selected if (p := feeding_parent(t)) and p not in selected}
        if orphans:
            raise dg.Failure(
                "Select the parent table too: "
                + ", ".join(f"{t} is loaded from the {p} changed in the same run" for t, p in orphans.items())
            )
        with failing_clearly(ways_out(company)), connector_logs_to(context):
            # as the pipeline script says them before its run: a misspelt `destinaton` loaded into DuckDB
            for notice in unknown_settings():
                context.log.warning(notice)
            # a killed run's packages: dagster-dlt would drop them, then read them again
            for notice in check_and_recover(pipeline, config.drop_pending, "drop_pending"):
                context.log.info(notice)
            run = prepare_run(
                pipeline,
                selected,
                [t.removesuffix(SUFFIX) for t in selected if t.endswith(SUFFIX)],
                company=company,
                refresh=config.full_refresh,
                **(source_options or {}),
            )
            for notice in history_notices(history, selected):
                context.log.warning(notice)
            # the pipeline script's steps (dagster-dlt's `run` loads without dropping the analyst views
            # a full refresh's drops need out of the way on Postgres), then dagster-dlt's metadata
            refresh = steps.refresh_mode(config.full_refresh, some_tables=context.is_subset)
            info = steps.run(pipeline, run.source, steps.run_options(pipeline, refresh))
            yield from in_dependency_order(materializations(context, dlt, translator, run, info))
            for table, count in flag_vanished(reattach(pipeline), run.monitor).items():
                context.log.info(f"{table}: {count} rows no longer in Pipedrive flagged is_deleted")
            if notice := append_only_notice(pipeline):
                context.log.warning(notice)
            if refused := run.monitor.refused_everything():  # the pipeline script's exit 2
                raise dg.Failure(refused)
            if run.monitor.stopped:  # the pipeline script's exit 3: what was read is loaded and materialized
                raise dg.Failure(f"stopped early: {run.monitor.stopped}")

    view_tables = sorted({table for view in VIEWS for table in view.tables} & set(catalog.resources))

    @dg.asset(
        key=dg.AssetKey([company.name, VIEWS_ASSET]),
        deps=[translator.key(table) for table in view_tables],
        group_name=company.pipeline_name,
        description="Analyst views (v_deals, v_open_pipeline_by_stage, ...), refreshed after a load.",
    )
    def analyst_views(context: AssetExecutionContext) -> dg.MaterializeResult:
        with failing_clearly():
            report = refresh_views(reattach(pipeline))
        for notice in report.notices():
            context.log.warning(notice)
        return dg.MaterializeResult(metadata={"created": report.created, "skipped": report.skipped})

    return [tables, analyst_views]


def build_definitions(
    companies: Sequence[Company] | None = None,
    destination: Any = None,
    pipelines_dir: str | None = None,
    entities: Sequence[str] | None = None,
    history: Sequence[str] | None = None,
    cron: str = SCHEDULE,
    source_options: dict[str, Any] | None = None,
) -> dg.Definitions:
    """Assets, a job and a schedule per company (default: the companies in `[pipedrive] companies`). Settings
    it cannot take (a settings file that is no TOML, a company name refused, an unknown destination, its
    credentials missing) fail it with the pipeline script's line, without dlt's exceptions (dozens of
    lines)."""
    assets: list[dg.AssetsDefinition] = []
    jobs, schedules = [], []
    try:
        history = configured_history() if history is None else history
        for company in companies or configured_companies():
            assets += company_assets(company, destination, pipelines_dir, entities, history, source_options)
            job = dg.define_asset_job(
                f"{company.pipeline_name}_sync", selection=dg.AssetSelection.groups(company.pipeline_name)
            )
            jobs.append(job)
            schedules.append(dg.ScheduleDefinition(job=job, cron_schedule=cron, execution_timezone="UTC"))
    except Exception as exc:
        raise failure_of(exc) from None
    return dg.Definitions(
        assets=assets, jobs=jobs, schedules=schedules, resources={"dlt": DagsterDltResource()}
    )


read_settings_of_checkout(ROOT)  # `dagster dev -f` from another folder, and each run's step process
defs = build_definitions()
