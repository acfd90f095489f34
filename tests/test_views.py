"""The analyst views on a synced emulator company, checked number by number against the emulator's ground
truth (`/_emulator/snapshot/<table>`), plus how views behave on young, partial and non-SQL destinations."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from connector_fixtures import make_pipeline, sync

from pipedrive_source.emulator import EmulatorHandle, run_emulator
from pipedrive_source.views import VIEWS, refresh_views, view_statements

CONVERTED_LEADS = 4


def utc(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value else None


def month(value: str | None) -> date | None:
    moment = utc(value)
    return date(moment.year, moment.month, 1) if moment else None


def query(pipeline: dlt.Pipeline, sql: str) -> list[dict[str, Any]]:
    with pipeline.sql_client() as client, client.execute_query(sql) as cursor:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def view_rows(pipeline: dlt.Pipeline, view: str) -> list[dict[str, Any]]:
    return query(pipeline, f"SELECT * FROM {view}")


@pytest.fixture(scope="module")
def company(emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Full sync, then some leads converted to deals the way Pipedrive shows it (a new deal carrying
    `source_lead_id`, the lead gone from the lead list) and one deleted, an incremental sync that reconciles
    (flags what left the lists as deleted), and the views refreshed."""
    workdir = tmp_path_factory.mktemp("views")
    sync(emulator, workdir)
    leads_before = emulator.control.snapshot("leads")
    unarchived = [lead["id"] for lead in leads_before if not lead.get("is_archived")]
    converted, trashed = unarchived[:CONVERTED_LEADS], unarchived[CONVERTED_LEADS]
    ops: list[dict[str, Any]] = [{"op": "delete", "table": "leads", "id": trashed}]  # deleted, no deal
    for lead_id in converted:
        ops += [
            {"op": "create", "table": "deals", "values": {"source_lead_id": lead_id}},
            {"op": "delete", "table": "leads", "id": lead_id},
        ]
    # an open activity due a month from now: the next due date of an owner who also has overdue ones
    activity = next(a for a in emulator.control.snapshot("activities") if not a["done"] and a["due_date"])
    due = (date.today() + timedelta(days=30)).isoformat()
    ops.append({"op": "update", "table": "activities", "id": activity["id"], "changes": {"due_date": due}})
    emulator.control.mutate(ops=ops)
    result = sync(emulator, workdir, reconcile=True)  # flags the leads gone from the list as deleted
    report = refresh_views(result.pipeline)
    truth = {
        t: emulator.control.snapshot(t)
        for t in ("deals", "stages", "pipelines", "users", "persons", "organizations", "activities", "leads")
    }
    # The snapshot renders deals as a plain list does: without `source_lead_id`, which the API returns only
    # when asked for with include_fields; take it from the emulator's records.
    sources = {r["id"]: r.get("source_lead_id") for r in emulator.company.revealed("deals")}
    for deal in truth["deals"]:
        deal["source_lead_id"] = sources[deal["id"]]
    yield {
        "pipeline": result.pipeline,
        "report": report,
        "truth": truth,
        "leads_before": leads_before,
        "converted": converted,
        "trashed": trashed,
    }


def by_id(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {row["id"]: row for row in rows}


def test_every_view_is_created_with_its_description(company: dict[str, Any]) -> None:
    assert company["report"].created == [view.name for view in VIEWS]
    assert company["report"].skipped == {}
    rows = query(company["pipeline"], "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal")
    comments = {row["view_name"]: row["comment"] for row in rows}
    for view in VIEWS:
        assert comments[view.name] == view.description


def test_deals_view_names_every_reference(company: dict[str, Any]) -> None:
    truth = company["truth"]
    stages, pipelines, users = by_id(truth["stages"]), by_id(truth["pipelines"]), by_id(truth["users"])
    persons, orgs = by_id(truth["persons"]), by_id(truth["organizations"])
    want = {deal["id"]: deal for deal in truth["deals"] if not deal["is_deleted"]}
    got = {row["deal_id"]: row for row in view_rows(company["pipeline"], "v_deals")}
    assert set(got) == set(want)
    for deal_id, deal in want.items():
        row = got[deal_id]
        assert row["stage_name"] == stages[deal["stage_id"]]["name"]
        assert row["pipeline_name"] == pipelines[deal["pipeline_id"]]["name"]
        assert row["owner_name"] == users[deal["owner_id"]]["name"]
        # a person or organization Pipedrive no longer lists has no name to show
        assert row["person_name"] == persons.get(deal.get("person_id"), {}).get("name")
        assert row["org_name"] == orgs.get(deal.get("org_id"), {}).get("name")
        assert row["value"] == pytest.approx(deal["value"])
        assert (row["status"], row["is_archived"]) == (deal["status"], deal["is_archived"])
    assert sum(1 for row in got.values() if row["person_name"]) > len(got) / 2  # the joins really matched


def test_open_pipeline_value_per_stage_equals_the_open_deals(company: dict[str, Any]) -> None:
    truth = company["truth"]
    open_deals = [
        d for d in truth["deals"] if d["status"] == "open" and not d["is_deleted"] and not d["is_archived"]
    ]
    count: Counter[tuple[int, str]] = Counter()
    value: defaultdict[tuple[int, str], float] = defaultdict(float)
    for deal in open_deals:
        count[deal["stage_id"], deal["currency"]] += 1
        value[deal["stage_id"], deal["currency"]] += deal["value"] or 0
    rows = view_rows(company["pipeline"], "v_open_pipeline_by_stage")
    got = {(row["stage_id"], row["currency"]): row for row in rows if row["open_deals"]}
    assert set(got) == set(count)
    for key, row in got.items():
        assert row["open_deals"] == count[key]
        assert row["open_value"] == pytest.approx(value[key])
    stages = {s["id"] for s in truth["stages"] if not s.get("is_deleted")}
    assert stages <= {row["stage_id"] for row in rows}  # every stage shows, even without open deals
    assert sum(row["open_value"] for row in rows) == pytest.approx(sum(value.values()))


def test_won_and_lost_by_month_equal_the_closed_deals(company: dict[str, Any]) -> None:
    want: defaultdict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0])
    for deal in company["truth"]["deals"]:
        if deal["is_deleted"] or deal["status"] not in ("won", "lost"):
            continue
        won = deal["status"] == "won"
        closed = deal.get("won_time" if won else "lost_time") or deal.get("close_time")
        cell = want[month(closed), deal["pipeline_id"], deal["currency"]]
        cell[0 if won else 2] += 1
        cell[1 if won else 3] += deal["value"] or 0
    rows = view_rows(company["pipeline"], "v_deals_won_lost_by_month")
    got = {(r["month"], r["pipeline_id"], r["currency"]): r for r in rows}
    assert set(got) == set(want)
    for key, (won_n, won_value, lost_n, lost_value) in want.items():
        row = got[key]
        assert (row["won_deals"], row["lost_deals"]) == (won_n, lost_n)
        assert row["won_value"] == pytest.approx(won_value)
        assert row["lost_value"] == pytest.approx(lost_value)
        assert row["win_rate"] == pytest.approx(won_n / (won_n + lost_n))


def test_activities_per_owner_equal_the_activities(company: dict[str, Any]) -> None:
    pipeline = company["pipeline"]
    today = query(pipeline, "SELECT CURRENT_DATE AS today")[0]["today"]
    want: defaultdict[int, Counter[str]] = defaultdict(Counter)
    next_due: dict[int, str] = {}
    for activity in company["truth"]["activities"]:
        if activity.get("is_deleted"):
            continue
        counts = want[activity["owner_id"]]
        counts["activities"] += 1
        counts["done" if activity.get("done") else "open"] += 1
        due = activity.get("due_date")
        if not activity.get("done") and due and date.fromisoformat(due) < today:
            counts["overdue"] += 1
        if not activity.get("done") and due and date.fromisoformat(due) >= today:
            next_due[activity["owner_id"]] = min(next_due.get(activity["owner_id"], due), due)
    users = by_id(company["truth"]["users"])
    got = {row["owner_id"]: row for row in view_rows(pipeline, "v_activities_by_owner")}
    assert set(got) == set(want)
    for owner, counts in want.items():
        row = got[owner]
        assert row["owner_name"] == users[owner]["name"]
        for column in ("activities", "done", "open", "overdue"):
            assert row[column] == counts[column], (owner, column)
        assert row["next_due_date"] == (date.fromisoformat(next_due[owner]) if owner in next_due else None)
    assert any(row["overdue"] and row["next_due_date"] for row in got.values())  # both kinds met


def test_lead_conversion_counts_converted_leads_per_month(company: dict[str, Any]) -> None:
    deals = company["truth"]["deals"]
    converted_from = {d["source_lead_id"]: d for d in deals if d.get("source_lead_id")}
    assert set(converted_from) == set(company["converted"])  # the emulator shows what we converted
    # every lead the first sync saw, but the one deleted without becoming a deal
    leads = {lead["id"]: lead for lead in company["leads_before"] if lead["id"] != company["trashed"]}
    want: defaultdict[date | None, Counter[str]] = defaultdict(Counter)
    for lead_id, lead in leads.items():
        counts = want[month(lead["add_time"])]
        counts["leads"] += 1
        if lead_id in converted_from:
            counts["converted"] += 1
            counts["won"] += converted_from[lead_id]["status"] == "won"
    got = {row["month"]: row for row in view_rows(company["pipeline"], "v_lead_conversion_by_month")}
    assert set(got) == set(want)
    for key, counts in want.items():
        row = got[key]
        assert (row["leads"], row["converted_leads"], row["won_deals"]) == (
            counts["leads"],
            counts["converted"],
            counts["won"],
        )
        assert row["conversion_rate"] == pytest.approx(counts["converted"] / counts["leads"])
    assert sum(row["converted_leads"] for row in got.values()) == CONVERTED_LEADS


def doc_queries(name: str) -> list[str]:
    """The SQL statements of a document's ```sql blocks."""
    text = (Path(__file__).resolve().parent.parent / name).read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    return [statement.strip() for block in blocks for statement in block.split(";") if statement.strip()]


def test_the_documented_queries_run_and_answer_what_they_say(company: dict[str, Any]) -> None:
    pipeline = company["pipeline"]
    queries = doc_queries("docs/analysts.md") + doc_queries("README.md")
    for sql in queries:
        if "deals_history" not in sql and "deal_flow" not in sql:  # opt-in tables, not in this sync
            query(pipeline, sql)
    twelve = next(sql for sql in queries if sql.startswith("-- lead conversion over the last twelve"))
    today = query(pipeline, "SELECT CURRENT_DATE AS today")[0]["today"]
    months = [row["month"] for row in query(pipeline, twelve)]
    assert all((today.year - m.year) * 12 + today.month - m.month < 12 for m in months)
    # the README's first look at the deals: values summed per currency, never EUR + USD together
    by_status = next(sql for sql in queries if "FROM pipedrive.deals WHERE" in sql)
    want: defaultdict[tuple[str, str], float] = defaultdict(float)
    for deal in company["truth"]["deals"]:
        if not deal["is_deleted"]:
            want[deal["status"], deal["currency"]] += deal["value"] or 0
    got = {(row[0], row[1]): row[-1] for row in (tuple(r.values()) for r in query(pipeline, by_status))}
    assert got == pytest.approx(dict(want))


def test_refresh_is_repeatable_and_keeps_the_numbers(company: dict[str, Any]) -> None:
    pipeline = company["pipeline"]
    before = view_rows(pipeline, "v_open_pipeline_by_stage")
    again = refresh_views(pipeline)
    assert again.created == [view.name for view in VIEWS]
    key = lambda r: (r["stage_id"], str(r["currency"]))  # noqa: E731
    assert sorted(before, key=key) == sorted(view_rows(pipeline, "v_open_pipeline_by_stage"), key=key)


# ---- young, partial and non-SQL destinations ---------------------------------------------------------------


def test_a_column_no_record_has_filled_yet_reads_as_typed_null(tmp_path: Path) -> None:
    """dlt creates a column only when some record has a value: before the first won deal there is no
    `won_time`, and the views must still be created, with NULL of the right type in its place."""
    won_lost = next(view for view in VIEWS if view.name == "v_deals_won_lost_by_month")
    deals_view = next(view for view in VIEWS if view.name == "v_deals")
    con = duckdb.connect(str(tmp_path / "young.duckdb"))
    con.execute("CREATE SCHEMA crm")
    con.execute(
        "CREATE TABLE crm.deals (id BIGINT, title TEXT, status TEXT, value DOUBLE, currency TEXT,"
        " pipeline_id BIGINT, stage_id BIGINT, owner_id BIGINT, is_deleted BOOLEAN,"
        " lost_time TIMESTAMPTZ)"
    )
    con.execute(
        "INSERT INTO crm.deals VALUES (1, 'a', 'lost', 10, 'EUR', 1, 1, 1, NULL, '2024-03-05 10:00+00'),"
        " (2, 'b', 'open', 5, 'EUR', 1, 1, 1, NULL, NULL)"
    )
    for table in ("pipelines", "stages", "users", "persons", "organizations"):
        con.execute(f"CREATE TABLE crm.{table} (id BIGINT, name TEXT)")
    columns = {
        name: {r[0] for r in con.execute(f"DESCRIBE crm.{name}").fetchall()}
        for name in ("deals", "pipelines", "stages", "users", "persons", "organizations")
    }
    for view in (won_lost, deals_view):
        for statement in view_statements(view, "duckdb", lambda name: ["crm", name], columns):
            con.execute(statement)
    rows = con.execute("SELECT month, lost_deals, won_deals FROM crm.v_deals_won_lost_by_month").fetchall()
    assert rows == [(date(2024, 3, 1), 1, 0)]
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'v_deals'"
        ).fetchall()
    )
    assert types["won_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["source_lead_id"] == "VARCHAR"
    assert types["probability"] == "DOUBLE"  # the spec's type, as when deals have one
    assert con.execute("SELECT count(*) FROM crm.v_deals WHERE won_time IS NULL").fetchone()[0] == 2


EMPTY_OPTIONAL = {  # fields a company may never have filled
    "deals": (
        "expected_close_date",
        "probability",
        "won_time",
        "lost_time",
        "close_time",
        "lost_reason",
        "person_id",
        "org_id",
    ),
    "activities": ("marked_as_done_time",),
}


def view_types(pipeline: dlt.Pipeline) -> dict[str, dict[str, str]]:
    return {
        view.name: {
            row["column_name"]: row["column_type"] for row in query(pipeline, f"DESCRIBE {view.name}")
        }
        for view in VIEWS
    }


def test_view_columns_have_the_same_types_whatever_the_data(company: dict[str, Any], tmp_path: Path) -> None:
    """A company where no deal has an expected close date: a column no value created (dlt creates one
    when some record has a value, or from a type hint, which tables loaded before hints came from the spec
    lack) became a NULL typed by its name, so `v_deals.expected_close_date` was text (date where deals had
    one) and `probability` bigint (double)."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        ops = [
            {"op": "update", "table": table, "id": row["id"], "changes": dict.fromkeys(fields)}
            for table, fields in EMPTY_OPTIONAL.items()
            for row in emulator.control.snapshot(table)
        ]
        emulator.control.mutate(ops=ops)
        result = sync(emulator, tmp_path)
    with result.pipeline.sql_client() as client:
        for table, fields in EMPTY_OPTIONAL.items():
            for name in fields:  # all null: as a table that dlt created without them
                [(filled,)] = client.execute_sql(f"SELECT count({name}) FROM {table}")
                assert filled == 0, (table, name)
                client.execute_sql(f"ALTER TABLE {table} DROP COLUMN {name}")
    report = refresh_views(result.pipeline)
    assert report.created == [view.name for view in VIEWS]
    assert view_types(result.pipeline) == view_types(company["pipeline"])


def test_views_whose_tables_were_not_synced_are_skipped_with_a_notice(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    result = sync(emulator, tmp_path, entities=["deals", "pipelines"])
    report = refresh_views(result.pipeline)
    assert report.created == ["v_deals_won_lost_by_month"]  # the one view deals + pipelines answer
    assert "stages" in report.skipped["v_open_pipeline_by_stage"]
    assert "activities" in report.skipped["v_activities_by_owner"]
    missing = "table stages, users, persons, organizations not in the destination (not synced)"
    assert f"view v_deals skipped: {missing}" in report.notices()


def test_a_destination_without_sql_views_is_skipped_with_a_notice(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    destination = dlt.destinations.filesystem(bucket_url=(tmp_path / "lake").as_uri())
    result = sync(
        emulator,
        tmp_path,
        pipeline=make_pipeline(tmp_path, destination, name="lake"),
        entities=["pipelines", "stages"],
    )
    report = refresh_views(result.pipeline)
    assert report.created == []
    assert "no SQL views" in report.skipped["*"]


@pytest.mark.parametrize("dialect", ["postgres", "snowflake", "bigquery", "tsql"])
def test_every_view_renders_in_other_sql_dialects(dialect: str) -> None:
    """The same views are written for other warehouses: each renders in the dialect, every table qualified.
    No such warehouse runs here, so this checks the SQL, not its results."""
    import sqlglot
    from sqlglot import exp

    for view in VIEWS:
        drop, create = view_statements(view, dialect, lambda name: ["analytics", name], {})
        parsed = sqlglot.parse_one(create, read=dialect)
        ctes = {cte.alias for cte in parsed.find_all(exp.CTE)}
        tables = [t for t in parsed.find_all(exp.Table) if t.name not in ctes]
        assert {t.name for t in tables} == {*view.tables, view.name}
        assert all(t.db == "analytics" for t in tables), create
        assert sqlglot.parse_one(drop, read=dialect).args.get("exists")


def test_view_sql_reads_only_its_declared_tables() -> None:
    import sqlglot
    from sqlglot import exp

    for view in VIEWS:
        tree = sqlglot.parse_one(view.sql, read="duckdb")
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
        read = {table.name for table in tree.find_all(exp.Table)} - ctes
        assert read == set(view.tables), view.name
