"""Analyst views over the synced tables, created (or refreshed) after each load: `refresh_views(pipeline)`.

Each view is written once, in DuckDB's SQL, with every column qualified by its table's alias. At refresh time
the SQL is parsed with sqlglot and adapted to the destination:
- tables are qualified with the pipeline's dataset (and catalog, where the destination has one);
- a column the destination does not have yet becomes a typed NULL: dlt creates a column only once some record
  has a value in it (no deal won yet -> no `won_time`), and a view must not break on a young company;
- identifiers are case-folded the destination's way and the statement is rendered in its dialect.
A destination that is not SQL (filesystem) or has no sqlglot dialect is skipped with a notice, and so is a
view whose tables were not synced (e.g. `--entities deals` alone) or that the dialect cannot express.

Views are replaced (DROP + CREATE), never altered, so new columns in the tables show up after the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import dlt
import sqlglot
from dlt.destinations.job_client_impl import SqlJobClientBase
from sqlglot import exp

from .column_types import declared_type

log = logging.getLogger("pipedrive_source")


@dataclass(frozen=True)
class View:
    name: str
    description: str
    tables: tuple[str, ...]  # every table the SQL reads (all must exist in the destination)
    sql: str  # DuckDB dialect; columns qualified by table alias
    columns: Mapping[str, str] = field(default_factory=dict)  # output column -> meaning (for the docs)


NOT_DELETED = "d.is_deleted IS NOT TRUE"

DEALS = View(
    name="v_deals",
    description="One row per deal that is not deleted, with the names of its pipeline, stage, owner, person "
    "and organization next to their ids. Archived deals are included (`is_archived`).",
    tables=("deals", "pipelines", "stages", "users", "persons", "organizations"),
    sql=f"""
SELECT
  d.id AS deal_id, d.title, d.status, d.is_archived, d.value, d.currency, d.probability,
  d.pipeline_id, p.name AS pipeline_name,
  d.stage_id, s.name AS stage_name, s.order_nr AS stage_order_nr,
  d.owner_id, u.name AS owner_name,
  d.person_id, pe.name AS person_name,
  d.org_id, o.name AS org_name,
  d.add_time, d.update_time, d.stage_change_time, d.expected_close_date,
  d.won_time, d.lost_time, d.close_time, d.lost_reason, d.source_lead_id
FROM deals AS d
LEFT JOIN pipelines AS p ON p.id = d.pipeline_id
LEFT JOIN stages AS s ON s.id = d.stage_id
LEFT JOIN users AS u ON u.id = d.owner_id
LEFT JOIN persons AS pe ON pe.id = d.person_id
LEFT JOIN organizations AS o ON o.id = d.org_id
WHERE {NOT_DELETED}
""",
    columns={
        "deal_id": "the deal's id",
        "pipeline_name, stage_name, owner_name, person_name, org_name": "names looked up by id",
        "stage_order_nr": "the stage's position in its pipeline",
        "source_lead_id": "the lead the deal was converted from (null when not converted)",
    },
)

OPEN_PIPELINE = View(
    name="v_open_pipeline_by_stage",
    description="The open pipeline: per pipeline stage and currency, the number and value of open deals "
    "(not deleted, not archived), and the value weighted by probability (the deal's own probability, "
    "else the stage's). Stages without open deals appear with 0.",
    tables=("stages", "pipelines", "deals"),
    sql="""
SELECT
  s.pipeline_id, p.name AS pipeline_name,
  s.id AS stage_id, s.name AS stage_name, s.order_nr AS stage_order_nr, s.deal_probability,
  d.currency,
  COUNT(d.id) AS open_deals,
  COALESCE(SUM(d.value), 0) AS open_value,
  COALESCE(SUM(d.value * COALESCE(d.probability, s.deal_probability, 100) / 100.0), 0) AS weighted_value
FROM stages AS s
LEFT JOIN pipelines AS p ON p.id = s.pipeline_id
LEFT JOIN deals AS d
  ON d.stage_id = s.id AND d.status = 'open' AND d.is_deleted IS NOT TRUE AND d.is_archived IS NOT TRUE
WHERE s.is_deleted IS NOT TRUE OR d.id IS NOT NULL
GROUP BY s.pipeline_id, p.name, s.id, s.name, s.order_nr, s.deal_probability, d.currency
""",
    columns={
        "open_deals": "open deals in the stage (in this currency)",
        "open_value": "sum of their value",
        "weighted_value": "sum of value x probability / 100",
    },
)

WON_LOST = View(
    name="v_deals_won_lost_by_month",
    description="Deals won and lost per calendar month (UTC) of closing, per pipeline and currency, with "
    "counts, values and the win rate. Deleted deals are left out; archived ones count.",
    tables=("deals", "pipelines"),
    sql=f"""
WITH closed AS (
  SELECT
    d.pipeline_id, d.currency, d.value, d.status,
    CASE WHEN d.status = 'won' THEN COALESCE(d.won_time, d.close_time)
         ELSE COALESCE(d.lost_time, d.close_time) END AS closed_at
  FROM deals AS d
  WHERE d.status IN ('won', 'lost') AND {NOT_DELETED}
)
SELECT
  CAST(DATE_TRUNC('month', c.closed_at AT TIME ZONE 'UTC') AS DATE) AS month,
  c.pipeline_id, p.name AS pipeline_name, c.currency,
  SUM(CASE WHEN c.status = 'won' THEN 1 ELSE 0 END) AS won_deals,
  SUM(CASE WHEN c.status = 'won' THEN c.value ELSE 0 END) AS won_value,
  SUM(CASE WHEN c.status = 'lost' THEN 1 ELSE 0 END) AS lost_deals,
  SUM(CASE WHEN c.status = 'lost' THEN c.value ELSE 0 END) AS lost_value,
  SUM(CASE WHEN c.status = 'won' THEN 1.0 ELSE 0.0 END) / COUNT(*) AS win_rate
FROM closed AS c
LEFT JOIN pipelines AS p ON p.id = c.pipeline_id
GROUP BY CAST(DATE_TRUNC('month', c.closed_at AT TIME ZONE 'UTC') AS DATE), c.pipeline_id, p.name, c.currency
""",
    columns={
        "month": "first day of the month the deal was won (won_time) or lost (lost_time), UTC",
        "win_rate": "won_deals / (won_deals + lost_deals)",
    },
)

ACTIVITIES = View(
    name="v_activities_by_owner",
    description="Activities per owner (not deleted): how many, done, still open, overdue (open with a due "
    "date before today), the next due date and the last time one was marked done.",
    tables=("activities", "users"),
    sql="""
SELECT
  a.owner_id, u.name AS owner_name,
  COUNT(*) AS activities,
  SUM(CASE WHEN a.done IS TRUE THEN 1 ELSE 0 END) AS done,
  SUM(CASE WHEN a.done IS TRUE THEN 0 ELSE 1 END) AS open,
  SUM(CASE WHEN a.done IS NOT TRUE AND CAST(a.due_date AS DATE) < CURRENT_DATE THEN 1 ELSE 0 END) AS overdue,
  MIN(CASE WHEN a.done IS NOT TRUE AND CAST(a.due_date AS DATE) >= CURRENT_DATE
      THEN CAST(a.due_date AS DATE) END) AS next_due_date,
  MAX(a.marked_as_done_time) AS last_done_time
FROM activities AS a
LEFT JOIN users AS u ON u.id = a.owner_id
WHERE a.is_deleted IS NOT TRUE
GROUP BY a.owner_id, u.name
""",
    columns={
        "overdue": "open activities due before today (the warehouse's current date)",
        # not the oldest overdue one: that read as "next due" years ago for an owner with overdue work
        "next_due_date": "the earliest due date, today or later, of an open activity (null: none due)",
    },
)

LEAD_CONVERSION = View(
    name="v_lead_conversion_by_month",
    description="Lead -> deal conversion per calendar month (UTC) in which the lead was created: leads, "
    "how many became deals (a deal's `source_lead_id`), the conversion rate, and how many of those deals are "
    "won. A converted lead leaves Pipedrive's lead list, so leads the connector never saw before conversion "
    "are counted from their deal (created in the deal's month). Deleted leads that no deal came from are "
    "left out.",
    tables=("leads", "deals"),
    sql="""
WITH converted AS (
  SELECT
    d.source_lead_id AS lead_id,
    MIN(d.add_time) AS converted_at,
    MAX(CASE WHEN d.status = 'won' THEN 1 ELSE 0 END) AS won
  FROM deals AS d
  WHERE d.source_lead_id IS NOT NULL
  GROUP BY d.source_lead_id
),
all_leads AS (
  SELECT l.id AS lead_id, l.add_time AS created_at FROM leads AS l
  WHERE l.is_deleted IS NOT TRUE OR l.id IN (SELECT c.lead_id FROM converted AS c)
  UNION ALL
  SELECT c.lead_id, c.converted_at FROM converted AS c
  WHERE NOT EXISTS (SELECT 1 FROM leads AS k WHERE k.id = c.lead_id)
)
SELECT
  CAST(DATE_TRUNC('month', a.created_at AT TIME ZONE 'UTC') AS DATE) AS month,
  COUNT(*) AS leads,
  COUNT(c.lead_id) AS converted_leads,
  CAST(COUNT(c.lead_id) AS DOUBLE) / COUNT(*) AS conversion_rate,
  COALESCE(SUM(c.won), 0) AS won_deals
FROM all_leads AS a
LEFT JOIN converted AS c ON c.lead_id = a.lead_id
GROUP BY CAST(DATE_TRUNC('month', a.created_at AT TIME ZONE 'UTC') AS DATE)
""",
    columns={
        "leads": "leads created in the month (open, archived or converted)",
        "converted_leads": "of those, leads some deal was converted from",
        "won_deals": "converted leads whose deal is won",
    },
)

VIEWS: tuple[View, ...] = (DEALS, OPEN_PIPELINE, WON_LOST, ACTIVITIES, LEAD_CONVERSION)


@dataclass
class ViewsReport:
    created: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # view (or "*") -> why

    def notices(self) -> list[str]:
        return [f"view {name} skipped: {why}" for name, why in self.skipped.items()]


def refresh_views(pipeline: dlt.Pipeline, views: Sequence[View] = VIEWS) -> ViewsReport:
    """Create or replace `views` in the pipeline's dataset; never raises for what a destination cannot do.
    What it skipped is in the report's `notices()`, for the caller to show once (the script's summary, a
    Dagster or Airflow log): logged here too, each notice was printed twice."""
    report = ViewsReport()
    dialect = pipeline.destination.capabilities().sqlglot_dialect
    with pipeline.destination_client() as client:
        if not isinstance(client, SqlJobClientBase) or not dialect:
            report.skipped["*"] = f"the {pipeline.destination.destination_name} destination has no SQL views"
        else:
            _refresh(client, dialect, views, report)
    return report


# destinations that drop a table a view reads (the view fails until `refresh_views` makes it again)
DROPS_TABLES_UNDER_VIEWS = {"duckdb", "motherduck"}


def drop_views(pipeline: dlt.Pipeline, views: Sequence[View] = VIEWS) -> None:
    """Drop `views` when the pipeline's normalized packages drop tables (a full refresh's): Postgres
    refuses to drop a table that a view reads, so the load failed and its package stayed stuck. Called
    right before the load, once the extraction is done: a run the company check refuses fails there and
    must leave the views (dropped earlier, they were gone until the next good run), and only then does a
    machine without the pipeline's local state know the tables (dlt restores them from the destination as
    the run starts). `refresh_views` recreates them after the load."""
    if _drops_tables(pipeline):
        _drop_in_destination(pipeline, views)


def drop_views_reading(
    pipeline: dlt.Pipeline, tables: Collection[str], views: Sequence[View] = VIEWS
) -> None:
    """Drop those of `views` that read one of `tables`, whatever the next load holds: before a run that
    drops `tables` and leaves no place between its normalize and load steps for `drop_views` (dlt's Airflow
    helper runs `pipeline.run` itself). `refresh_views` makes them again."""
    _drop_in_destination(pipeline, [view for view in views if set(view.tables) & set(tables)])


def _drop_in_destination(pipeline: dlt.Pipeline, views: Sequence[View]) -> None:
    """Drop `views` where the destination refuses to drop a table a view reads."""
    dialect = pipeline.destination.capabilities().sqlglot_dialect
    if not dialect or not views:
        return
    if pipeline.destination.destination_name in DROPS_TABLES_UNDER_VIEWS:
        return  # and opening DuckDB here would map its library into the extraction's memory until the load
    with pipeline.destination_client() as client:
        if not isinstance(client, SqlJobClientBase):
            return
        sql = client.sql_client
        for view in views:
            path = sql.make_qualified_table_name_path(view.name, quote=False)
            sql.execute_sql(_drop(_table(path, sql.capabilities.casefold_identifier), dialect))


def _drops_tables(pipeline: dlt.Pipeline) -> bool:
    packages = pipeline.list_normalized_load_packages()
    return any(pipeline.get_load_package_state(load_id).get("dropped_tables") for load_id in packages)


def _refresh(client: SqlJobClientBase, dialect: str, views: Sequence[View], report: ViewsReport) -> None:
    needed = sorted({table for view in views for table in view.tables})
    columns = {table: set(cols) for table, cols in client.get_storage_tables(needed) if cols}
    sql = client.sql_client
    caps = sql.capabilities

    def path(name: str) -> list[str]:
        return sql.make_qualified_table_name_path(name, quote=False)

    for view in views:
        missing = [table for table in view.tables if table not in columns]
        if missing:
            report.skipped[view.name] = f"table {', '.join(missing)} not in the destination (not synced)"
            continue
        try:
            statements = view_statements(view, dialect, path, columns, caps.casefold_identifier)
        except sqlglot.errors.SqlglotError as exc:
            report.skipped[view.name] = f"the {dialect} dialect cannot express it ({exc})"
            continue
        try:
            for statement in statements:
                sql.execute_sql(statement)
        except Exception as exc:  # the load is committed already: a view that fails must not fail the run
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            report.skipped[view.name] = f"the destination refused it: {first_line[:200]}"
            continue
        _comment(sql, view, dialect, path)
        report.created.append(view.name)


def view_statements(
    view: View,
    dialect: str,
    path: Callable[[str], list[str]],
    columns: Mapping[str, set[str]],
    casefold: Callable[[str], str] = str,
) -> list[str]:
    """DROP + CREATE of `view` for `dialect`; `path(name)` gives [catalog,] dataset, name of a table."""
    query = adapt_query(view, path, columns, casefold)
    target = _table(path(view.name), casefold)
    create = exp.Create(this=target, kind="VIEW", expression=query)
    return [_drop(target.copy(), dialect), create.sql(dialect=dialect, identify=True)]


def _drop(view: exp.Table, dialect: str) -> str:
    return exp.Drop(this=view, kind="VIEW", exists=True).sql(dialect=dialect, identify=True)


def adapt_query(
    view: View,
    path: Callable[[str], list[str]],
    columns: Mapping[str, set[str]],
    casefold: Callable[[str], str] = str,
) -> exp.Expression:
    """The view's query with qualified tables, absent columns as typed NULLs, identifiers case-folded."""
    query = sqlglot.parse_one(view.sql, read="duckdb")
    aliases: dict[str, str] = {}
    for table in list(query.find_all(exp.Table)):
        if table.name in view.tables:
            aliases[table.alias_or_name] = table.name
            qualified = _table(path(table.name), casefold)
            if table.args.get("alias"):
                qualified.set("alias", table.args["alias"].copy())
            table.replace(qualified)
    for column in list(query.find_all(exp.Column)):
        table = aliases.get(column.table)
        if table and column.name not in columns.get(table, ()):
            null = exp.cast(exp.null(), null_type(table, column.name))
            # a bare projection keeps its name: `d.won_time` -> `CAST(NULL AS ...) AS won_time`
            projected = isinstance(column.parent, exp.Select) and column.arg_key == "expressions"
            column.replace(exp.alias_(null, column.name) if projected else null)
    for identifier in query.find_all(exp.Identifier):
        identifier.set("this", casefold(identifier.this))
    return query


# dlt's types as the views' SQL (DuckDB's dialect, rendered in the destination's); others as text
SQL_TYPES = {
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
    "json": "JSON",
}


def null_type(table: str, column: str) -> str:
    """The type of an absent column's NULL: the type dlt creates the column with once it is there (from the
    spec), so that a view's columns have the same types whatever the data. Guessed from the name, an
    absent `expected_close_date` was text, `probability` bigint (double when present)."""
    return SQL_TYPES.get(declared_type(table, column) or "text", "TEXT")


def _table(parts: Sequence[str], casefold: Callable[[str], str]) -> exp.Table:
    names = [exp.to_identifier(casefold(part)) for part in parts]
    name, db, catalog = (
        names[-1],
        names[-2] if len(names) > 1 else None,
        names[-3] if len(names) > 2 else None,
    )
    return exp.Table(this=name, db=db, catalog=catalog)


def _comment(sql: object, view: View, dialect: str, path: Callable[[str], list[str]]) -> None:
    """COMMENT ON VIEW where the destination has it: the description shows up in SQL clients."""
    statement = exp.Comment(
        this=_table(path(view.name), sql.capabilities.casefold_identifier),  # type: ignore[attr-defined]
        kind="VIEW",
        expression=exp.Literal.string(view.description),
    )
    try:
        sql.execute_sql(statement.sql(dialect=dialect, identify=True))  # type: ignore[attr-defined]
    except (
        Exception
    ) as exc:  # a comment is a nicety: a destination without COMMENT ON VIEW still has the view
        log.debug("no comment on view %s: %s", view.name, exc)
