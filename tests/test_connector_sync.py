"""The connector against the emulator (scale tiny): full sync, no-change run, incremental run after mutations,
reconcile, hard deletes, child sets of changed deals. Every comparison is row by row with the ground truth."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dlt
import duckdb
import pytest
from connector_fixtures import (
    ALL_TABLES,
    DATASET,
    DEFAULT_TABLES,
    assert_equal_to_truth,
    assert_no_change_budget,
    counted_connections,
    highest_burst,  # noqa: F401 (the fixture: syncs of every entity, whatever their pacing)
    incremental_listings,
    make_pipeline,
    sync,
    synced_rows,
)
from dlt.destinations.exceptions import DatabaseTerminalException

from pipedrive_source import SyncMonitor, pipedrive_source
from pipedrive_source.deletions import flag_vanished
from pipedrive_source.emulator import run_emulator
from pipedrive_source.entities import BY_NAME, ENTITIES, UPDATED_SINCE
from pipedrive_source.timefmt import parse, render


def test_full_sync_equals_ground_truth(emulator, tmp_path: Path) -> None:
    result = sync(emulator, tmp_path, entities=ALL_TABLES)  # opt-in per-deal tables included
    assert result.loaded["deals"] == len(emulator.control.snapshot("deals"))
    for endpoint, statuses in result.emulator_stats["statuses_by_endpoint"].items():
        allowed = {"200", "429", "404"} if "{id}" in endpoint else {"200", "429"}  # deleted parents: 404
        assert set(statuses) <= allowed, (endpoint, statuses)
    assert_equal_to_truth(emulator, tmp_path, ALL_TABLES)


def test_no_change_run_loads_nothing_and_costs_one_request_per_endpoint(emulator, tmp_path: Path) -> None:
    sync(emulator, tmp_path)
    second = sync(emulator, tmp_path)
    assert second.loaded == {}
    assert second.flagged == {}
    assert_no_change_budget(second)


def test_unsortable_lists_are_read_in_full_once_per_interval(emulator, tmp_path: Path) -> None:
    tables = ["tasks", "call_logs", "projects", "boards", "phases"]
    unsortable = {
        "/api/v2/tasks",
        "/v1/callLogs",
        "/api/v2/projects",
        "/api/v2/projects/archived",
        "/api/v2/phases",
    }
    sync(emulator, tmp_path, entities=tables)
    emulator.control.mutate(ops=[{"op": "advance_clock", "seconds": 23 * 3600}])
    within = sync(emulator, tmp_path, entities=tables)
    assert not unsortable & set(within.emulator_stats["requests"]), within.emulator_stats["requests"]

    changes = emulator.control.mutate(seed=21, updates=30, deletes=6, advance_seconds=2 * 3600)
    changed = {t for kind in ("updated", "deleted") for t, ids in changes[kind].items() if ids}
    assert {"tasks", "call_logs", "projects"} & changed  # the interval's end must have something to bring
    later = sync(emulator, tmp_path, entities=tables)  # 25 h after the last full read
    assert unsortable <= set(later.emulator_stats["requests"])
    assert later.loaded or later.flagged, (changes, later.loaded, later.flagged)
    assert_equal_to_truth(emulator, tmp_path, tables)

    forced = sync(emulator, tmp_path, entities=tables, reconcile=True)  # reconcile reads everything
    assert unsortable <= set(forced.emulator_stats["requests"])
    every_run = sync(emulator, tmp_path, entities=tables, full_read_interval_hours=0)
    assert unsortable <= set(every_run.emulator_stats["requests"])


def test_mutations_sync_incrementally_and_flag_deleted_deals(emulator, tmp_path: Path) -> None:
    full = sync(emulator, tmp_path, entities=ALL_TABLES)
    changes = emulator.control.mutate(seed=11, creates=12, updates=40, deletes=10, archives=6)
    # interval 0: the unsortable lists are read too, so every table can be compared with the new truth
    result = sync(emulator, tmp_path, entities=ALL_TABLES, full_read_interval_hours=0)

    # only the changes travelled: a handful of requests per endpoint, far fewer rows than the full sync
    per_endpoint = result.emulator_stats["requests"]
    assert all(per_endpoint.get(path, 0) <= n for path, n in incremental_listings().items()), per_endpoint
    assert result.requests < full.requests
    assert 0 < result.rows < full.rows / 3
    changed_deals = set(changes["created"].get("deals", []) + changes["updated"].get("deals", []))
    assert result.loaded["deals"] >= len(changed_deals)

    # deleted deals stay, flagged; archived deals are flagged too
    deals = {row["id"]: row for row in synced_rows(result.pipeline, "deals")}
    for deal_id in changes["deleted"].get("deals", []):
        assert deals[deal_id]["is_deleted"] is True
    for deal_id in changes["archived"].get("deals", []):
        assert deals[deal_id]["is_archived"] is True

    # everything equals the new ground truth except records Pipedrive no longer lists (reconcile's job)
    vanished = {t for t in changes["deleted"] if t not in ("deals", "deal_products", "deal_installments")}
    vanished |= {"deal_flow", "deal_participants"}  # participants of deleted persons and deals disappear
    # the followers and relationships of deleted persons, organizations and products likewise
    vanished |= {e.name for e in ENTITIES if e.opt_in and e.parent in vanished}
    assert_equal_to_truth(emulator, tmp_path, [t for t in ALL_TABLES if t not in vanished])


def test_reconcile_flags_every_record_pipedrive_no_longer_lists(emulator, tmp_path: Path) -> None:
    sync(emulator, tmp_path, entities=ALL_TABLES)
    changes = emulator.control.mutate(seed=12, creates=5, updates=10, deletes=12, archives=2)
    sync(emulator, tmp_path, entities=ALL_TABLES, full_read_interval_hours=0)  # every change is loaded
    result = sync(emulator, tmp_path, entities=ALL_TABLES, reconcile=True)

    # reconcile lists ids and loads no rows, but for the children whose changes leave their parent
    # unstamped (products' variations, organizations' relationships) where a parent's set changed: the
    # parents are read for them, not loaded again, nor their other children (their followers) read
    unstamped = {e.name for e in ENTITIES if e.reconcile_all_parents}
    assert {t.split("__")[0] for t, rows in result.loaded.items() if rows} <= unstamped, result.loaded
    for table, ids in changes["deleted"].items():
        if BY_NAME[table].strategy == UPDATED_SINCE and table != "deals":
            assert result.flagged.get(table) == len(ids), (table, result.flagged)
    # a deal's flow is read again only when the deal changes: a note, file or activity edited since (which
    # leaves its deal as it was) is there as it was; its own table has it as it is
    assert_equal_to_truth(emulator, tmp_path, [t for t in ALL_TABLES if t != "deal_flow"])
    rows = {row["id"]: row for row in synced_rows(result.pipeline, "activities")}
    for activity_id in changes["deleted"].get("activities", []):
        assert rows[activity_id]["is_deleted"] is True
        assert rows[activity_id]["subject"]  # flagged in place: the last known content is kept


LOOKUP_LISTS = ["users", "activity_types", "currencies", "filters", "roles", "permission_sets", "goals"]


def test_a_record_deleted_from_any_lookup_list_is_flagged(emulator, tmp_path: Path) -> None:
    """A deleted goal or currency stayed in the emulator's lists (its snapshot, the truth, had it gone), so
    the run flagged nothing and the warehouse kept it live."""
    sync(emulator, tmp_path, entities=LOOKUP_LISTS)
    ops = [
        {"op": "delete", "table": table, "id": max(row["id"] for row in emulator.control.snapshot(table))}
        for table in LOOKUP_LISTS
    ]
    deleted = emulator.control.mutate(ops=ops)["deleted"]
    result = sync(emulator, tmp_path, entities=LOOKUP_LISTS)
    assert result.flagged == {table: 1 for table in LOOKUP_LISTS}
    for table in LOOKUP_LISTS:
        rows = {row["id"]: row for row in synced_rows(result.pipeline, table)}
        assert rows[deleted[table][0]]["is_deleted"] is True, table
    assert_equal_to_truth(emulator, tmp_path, LOOKUP_LISTS)


def test_the_rows_vanished_from_every_table_are_flagged_through_one_connection(emulator, tmp_path) -> None:
    """A destination client per table flagged (dlt resolving the destination's configuration, connecting)
    took 1.7-2.9 s for the 33 tables a reconcile of the small demo flagged, for statements of milliseconds."""
    pipeline = sync(emulator, tmp_path, entities=LOOKUP_LISTS).pipeline
    ops = [
        {"op": "delete", "table": table, "id": max(row["id"] for row in emulator.control.snapshot(table))}
        for table in LOOKUP_LISTS
    ]
    emulator.control.mutate(ops=ops)
    monitor = SyncMonitor()
    options = {"api_token": emulator.api_token, "base_url": emulator.base_url, "entities": LOOKUP_LISTS}
    pipeline.run(pipedrive_source(monitor=monitor, **options), loader_file_format="parquet")
    with counted_connections(pipeline) as counts:
        flagged = flag_vanished(pipeline, monitor)
    assert flagged == {table: 1 for table in LOOKUP_LISTS}
    assert (counts.opened, counts.left_open) == (1, 0)


def test_a_filesystem_destination_gets_one_tombstone_per_deleted_record(emulator, tmp_path: Path) -> None:
    """The filesystem destination appends: a record Pipedrive no longer lists gets a tombstone row. Its
    earlier rows stay as they were, unflagged, and every later run found them again, appended another
    tombstone and counted the record flagged again; and each table's tombstones were a load of their own."""
    tables = LOOKUP_LISTS[:3]
    lake = dlt.destinations.filesystem(bucket_url=(tmp_path / "lake").as_uri())
    pipeline = sync(emulator, tmp_path, pipeline=make_pipeline(tmp_path, lake), entities=tables).pipeline
    ops = [
        {"op": "delete", "table": table, "id": max(row["id"] for row in emulator.control.snapshot(table))}
        for table in tables
    ]
    deleted = emulator.control.mutate(ops=ops)["deleted"]
    assert sync(emulator, tmp_path, pipeline=pipeline, entities=tables).flagged == dict.fromkeys(tables, 1)
    assert sync(emulator, tmp_path, pipeline=pipeline, entities=tables).flagged == {}
    loads = set()
    for table in tables:
        files = f"{tmp_path / 'lake' / DATASET / table}/*.parquet"
        rows = duckdb.sql(f"SELECT id, _dlt_load_id FROM read_parquet('{files}') WHERE is_deleted").fetchall()
        assert [key for key, _ in rows] == deleted[table], table
        loads.update(load for _, load in rows)
    assert len(loads) == 1


def test_goals_hold_every_goal_of_the_company_active_or_not(emulator, tmp_path: Path) -> None:
    """getGoals' defaults hide goals: `is_active` is true unless asked, and without a filter the spec marks
    "everyone's goals will be returned" only the credentials' user's goals come. The tiny company had no
    inactive goal, so a connector that never asked for `is_active=false` loaded every goal it has."""
    me = next(u["id"] for u in emulator.control.snapshot("users") if u["is_you"])
    goals = emulator.control.snapshot("goals")
    hidden = [g for g in goals if not g["is_active"] and g["assignee"] != {"id": me, "type": "person"}]
    assert hidden, "the tiny company has an inactive goal not assigned to the credentials' user"
    result = sync(emulator, tmp_path, entities=["goals"])
    assert result.loaded["goals"] == len(goals)
    assert_equal_to_truth(emulator, tmp_path, ["goals"])


def test_deleted_projects_keep_whether_they_were_archived(emulator, tmp_path: Path) -> None:
    """By default /projects and /projects/archived leave deleted projects out; `status=...,deleted` adds
    them, each to the list of its kind. The emulator listed every deleted project among the archived ones
    too, so a deleted archived project came first through /projects and loaded with is_archived false."""
    projects = emulator.control.snapshot("projects")
    live = next(p for p in projects if p["status"] != "deleted" and not p["archive_time"])
    archived = next(p for p in projects if p["status"] != "deleted" and p["archive_time"])
    emulator.control.mutate(
        ops=[{"op": "delete", "table": "projects", "id": p["id"]} for p in (live, archived)]
    )
    result = sync(emulator, tmp_path, entities=["projects"])
    rows = {row["id"]: row for row in synced_rows(result.pipeline, "projects")}
    assert (rows[live["id"]]["status"], rows[live["id"]]["is_archived"]) == ("deleted", False)
    assert (rows[archived["id"]]["status"], rows[archived["id"]]["is_archived"]) == ("deleted", True)
    assert_equal_to_truth(emulator, tmp_path, ["projects"])


def test_a_deleted_archived_deal_is_loaded_deleted_and_archived(emulator, tmp_path: Path) -> None:
    """/deals/archived, like /deals, leaves deleted deals out unless `status` names `deleted` ("If omitted,
    all not deleted deals are returned"); the tiny company has no deleted archived deal, so no sync showed
    whether the archived listing asks for them."""
    deal = next(
        d for d in emulator.control.snapshot("deals") if d["status"] == "open" and not d["is_archived"]
    )
    ops = [{"op": "archive_deal", "id": deal["id"]}, {"op": "delete", "table": "deals", "id": deal["id"]}]
    emulator.control.mutate(ops=ops)
    result = sync(emulator, tmp_path, entities=["deals"])
    rows = {r["id"]: r for r in synced_rows(result.pipeline, "deals")}
    assert deal["id"] in rows, "the deleted archived deal was not loaded"
    assert (rows[deal["id"]]["is_deleted"], rows[deal["id"]]["is_archived"]) == (True, True)
    assert_equal_to_truth(emulator, tmp_path, ["deals"])


def test_hard_delete_removes_deleted_records(emulator, tmp_path: Path) -> None:
    sync(emulator, tmp_path, hard_delete=True)
    changes = emulator.control.mutate(seed=13, deletes=10)
    sync(emulator, tmp_path, hard_delete=True, reconcile=True)
    for table, ids in changes["deleted"].items():
        if table in DEFAULT_TABLES:
            pk = BY_NAME[table].primary_key
            remaining = {row[pk] for row in synced_rows(sync_pipeline(tmp_path), table)}
            assert not remaining & set(ids), table
    assert_equal_to_truth(emulator, tmp_path, DEFAULT_TABLES, hard_delete=True)


def test_a_hard_delete_that_fails_halfway_leaves_each_row_with_its_nested_rows(emulator, tmp_path) -> None:
    """Deleting a vanished record's rows is one DELETE per nested table and one for the record's own row.
    Run one by one, a failure between them (here the destination refuses the last: an analyst's table
    still references the person) left the person's row without its emails and phones until a later
    reconcile; in one transaction the destination keeps both or neither."""
    tables = ["persons"]
    pipeline = sync(emulator, tmp_path, entities=tables, hard_delete=True).pipeline
    with pipeline.sql_client() as client:
        ((person_id,),) = client.execute_sql(
            f"SELECT p.id FROM {DATASET}.persons p JOIN {DATASET}.persons__emails e "
            "ON e._dlt_root_id = p._dlt_id ORDER BY p.id LIMIT 1"
        )
        emulator.control.mutate(ops=[{"op": "delete", "table": "persons", "id": person_id}])
        client.execute_sql(f"ALTER TABLE {DATASET}.persons ADD PRIMARY KEY (id)")
        client.execute_sql(f"CREATE TABLE {DATASET}.vip (person_id BIGINT REFERENCES {DATASET}.persons (id))")
        client.execute_sql(f"INSERT INTO {DATASET}.vip VALUES ({person_id})")

    with pytest.raises(DatabaseTerminalException, match="foreign key"):
        sync(emulator, tmp_path, entities=tables, pipeline=pipeline, hard_delete=True, reconcile=True)

    with pipeline.sql_client() as client:
        kept = client.execute_sql(
            f"SELECT count(*) FROM {DATASET}.persons__emails e JOIN {DATASET}.persons p "
            f"ON e._dlt_root_id = p._dlt_id WHERE p.id = {person_id}"
        )
        assert kept[0][0] > 0  # the person's row is still there, and with it its emails
        client.execute_sql(f"DROP TABLE {DATASET}.vip")
    again = sync(emulator, tmp_path, entities=tables, pipeline=pipeline, hard_delete=True, reconcile=True)
    assert again.flagged == {"persons": 1}
    assert_equal_to_truth(emulator, tmp_path, tables, hard_delete=True)


def test_a_run_without_hard_delete_after_one_with_it_keeps_deleted_deals(emulator, tmp_path: Path) -> None:
    """`--hard-delete` is a choice per run: a run without it keeps the deals deleted meanwhile, flagged,
    although an earlier run of the pipeline deleted them (dlt keeps a column hint a later run leaves out).
    Deals the earlier run deleted stay deleted: nothing reads them again."""
    sync(emulator, tmp_path, entities=["deals"], hard_delete=True)
    deal = min(live_ids(emulator, "deals"))
    emulator.control.mutate(ops=[{"op": "delete", "table": "deals", "id": deal}])
    result = sync(emulator, tmp_path, entities=["deals"])
    (truth,) = [row for row in emulator.control.snapshot("deals") if row["id"] == deal]
    synced = {row["id"]: row for row in synced_rows(result.pipeline, "deals")}
    assert deal in synced, "deleted although the run did not ask for hard deletes"
    assert (synced[deal]["is_deleted"], synced[deal]["status"]) == (truth["is_deleted"], truth["status"])
    assert truth["is_deleted"] is True


def sync_pipeline(workdir: Path):
    from connector_fixtures import make_pipeline

    return make_pipeline(workdir)


def test_products_of_a_changed_deal_are_replaced_as_a_set(emulator, tmp_path: Path) -> None:
    sync(emulator, tmp_path, entities=["deals", "deal_products"])
    live = {
        d["id"] for d in emulator.control.snapshot("deals") if not d["is_deleted"] and not d["is_archived"]
    }
    by_deal: dict[int, list[int]] = {}
    for row in emulator.control.snapshot("deal_products"):
        if row["deal_id"] in live:
            by_deal.setdefault(row["deal_id"], []).append(row["id"])
    single = next(d for d, ids in by_deal.items() if len(ids) == 1)
    several = next(d for d, ids in by_deal.items() if len(ids) > 1)
    ops = [
        {"op": "delete", "table": "deal_products", "id": by_deal[single][0]},
        {"op": "delete", "table": "deal_products", "id": by_deal[several][0]},
    ]
    emulator.control.mutate(ops=ops)

    result = sync(emulator, tmp_path, entities=["deals", "deal_products"])
    assert result.emulator_stats["requests"]["/api/v2/deals/products"] == 1  # both deals in one batch
    synced = {row["id"]: row["deal_id"] for row in synced_rows(result.pipeline, "deal_products")}
    assert by_deal[single][0] not in synced and single not in synced.values()  # last product gone too
    assert by_deal[several][0] not in synced
    assert all(i in synced for i in by_deal[several][1:])
    assert_equal_to_truth(emulator, tmp_path, ["deals", "deal_products"])


def test_a_first_sync_writes_no_placeholder_rows(emulator, tmp_path: Path) -> None:
    """A placeholder row clears the old rows of a parent left without any; into tables that hold no rows
    yet there is nothing to clear, so a first sync writes exactly the rows the destination keeps (one per
    deal without products used to be written and dropped again by the load)."""
    tables = ["deals", "deal_products", "deal_installments", "products", "product_variations"]
    result = sync(emulator, tmp_path, entities=tables)
    kept = {table: len(synced_rows(result.pipeline, table)) for table in tables}
    assert {table: result.loaded.get(table, 0) for table in tables} == kept
    assert_equal_to_truth(emulator, tmp_path, tables)


def test_children_follow_every_parent_change_whatever_entities_each_run_covers(
    emulator, tmp_path: Path
) -> None:
    """Children are read for the parents a run loads. A run over deals alone (`--entities deals,persons`
    hourly, say) moves the deals cursor past changes whose deal products it does not read, and a child
    table added to a pipeline that loaded its parents before would hold only the children of parents
    changed since: the parent is read again from where its children stopped following it."""
    both = ["deals", "deal_products"]
    sync(emulator, tmp_path, entities=both)
    products = [
        p for p in emulator.control.snapshot("deal_products") if p["deal_id"] in live_ids(emulator, "deals")
    ]
    emulator.control.mutate(
        ops=[
            {"op": "delete", "table": "deal_products", "id": products[0]["id"]},
            {"op": "update", "table": "deal_products", "id": products[1]["id"], "changes": {"quantity": 77}},
        ]
    )
    assert sync(emulator, tmp_path, entities=["deals"]).loaded["deals"] >= 1  # the parents' changes
    sync(emulator, tmp_path, entities=both)
    assert_equal_to_truth(emulator, tmp_path, both)

    (tmp_path / "later").mkdir()
    products_only = sync(emulator, tmp_path / "later", entities=["products"])  # variations not asked for
    assert products_only.loaded["products"] > 0
    sync(emulator, tmp_path / "later", entities=["products", "product_variations"])
    assert_equal_to_truth(emulator, tmp_path / "later", ["products", "product_variations"])


def live_ids(emulator, table: str) -> set[int]:
    return {r["id"] for r in emulator.control.snapshot(table) if not r.get("is_deleted")}


def test_start_date_limits_the_first_load(emulator, tmp_path: Path) -> None:
    deals = emulator.control.snapshot("deals")
    times = sorted(d["update_time"] for d in deals)
    cutoff = times[len(times) // 2]
    result = sync(emulator, tmp_path, entities=["deals", "notes"], start_date=cutoff)
    loaded = synced_rows(result.pipeline, "deals")
    assert {d["id"] for d in loaded} == {d["id"] for d in deals if d["update_time"] >= cutoff}
    notes = emulator.control.snapshot("notes")
    v1_cutoff = render(parse(cutoff), "v1")  # notes write v1 timestamps
    expected = sum(1 for n in notes if n["update_time"] >= v1_cutoff)
    assert len(synced_rows(result.pipeline, "notes")) == expected


def test_unknown_entity_and_bad_settings_are_one_line_errors(emulator) -> None:
    from pipedrive_source import ConfigError, pipedrive_source

    with pytest.raises(ConfigError, match="entities must be names of tables: .*, not 'nope'"):
        pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, entities=["deals", "nope"])
    with pytest.raises(ConfigError, match="start_date"):
        pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, start_date="soon")
    with pytest.raises(ConfigError, match="base_url"):
        pipedrive_source(api_token=emulator.api_token, base_url="ftp://x")
    with pytest.raises(ConfigError, match="page_size"):
        pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, page_size=501)


def test_a_bulk_update_s_second_is_read_again_only_until_it_is_settled(emulator, tmp_path: Path) -> None:
    """A bulk update stamps many records with one second, the cursor's boundary. While that second could
    still gain records (the run started less than a minute after it) the next run reads them again; the
    first run starting later moves the cursor past it, so runs after that cost one request per listing. A
    record written late with a stamp inside the margin is still loaded."""
    deals = [r for r in emulator.control.snapshot("deals") if not r.get("is_deleted")]
    sync(emulator, tmp_path, entities=["deals"], page_size=10)
    bulk = [
        {"op": "update", "table": "deals", "id": r["id"], "changes": {"title": f"bulk {r['id']}"}}
        for r in deals
    ]
    stamped = emulator.control.mutate(ops=bulk)["clock"]
    listings = incremental_listings()["/api/v2/deals"]

    def deal_requests(result) -> int:
        assert result.emulator_stats["total_requests"] == result.requests
        return result.emulator_stats["requests"]["/api/v2/deals"]

    # the bulk's pages of /api/v2/deals (archived deals have a listing of their own): every one read again
    # while the second is unsettled. (len(deals) // 10 failed whenever the live deals filled whole pages)
    pages = -(-sum(1 for r in deals if not r.get("is_archived")) // 10)

    assert sync(emulator, tmp_path, entities=["deals"], page_size=10).loaded["deals"] >= len(deals)
    unsettled = sync(emulator, tmp_path, entities=["deals"], page_size=10)  # the same second, for Pipedrive
    assert unsettled.loaded == {} and deal_requests(unsettled) >= pages > listings
    later = emulator.control.mutate(ops=[{"op": "advance_clock", "seconds": 1}])["clock"]  # a minute on
    assert parse(later) - parse(stamped) >= timedelta(seconds=61)
    # reads them once more, then moves on
    settling = sync(emulator, tmp_path, entities=["deals"], page_size=10)
    assert settling.loaded == {} and deal_requests(settling) >= pages > listings
    settled = sync(emulator, tmp_path, entities=["deals"], page_size=10)
    assert settled.loaded == {} and deal_requests(settled) == listings

    stamp = int((parse(later) - timedelta(seconds=30)).timestamp())  # within the margin of `settled`'s start
    late = {"title": "written late", "update_time": stamp}
    emulator.control.mutate(
        advance_seconds=1, ops=[{"op": "update", "table": "deals", "id": deals[0]["id"], "changes": late}]
    )
    assert sync(emulator, tmp_path, entities=["deals"], page_size=10).loaded["deals"] == 1
    assert_equal_to_truth(emulator, tmp_path, ["deals"])


def test_records_holding_a_deleted_option_equal_the_truth(tmp_path: Path) -> None:
    """A deleted option's id is kept as text in the label column (v2 lists the option no more; leads' v1
    definitions still name it). The truth loader made it NULL, so every soak round after a deleted option
    reported the records still holding it (e.g. products__set_field: got '1071', want None)."""
    tables = ["deals", "leads", "products"]
    with run_emulator(seed=3, scale="tiny") as emulator:
        sync(emulator, tmp_path, entities=tables)
        ops = []
        for entity, fields, table in (
            ("deal", "deal_fields", "deals"),
            ("product", "product_fields", "products"),
        ):
            for field in emulator.control.snapshot(fields):
                if field.get("is_custom_field") and field["field_type"] in ("enum", "set"):
                    held = [
                        r["custom_fields"].get(field["field_code"]) for r in emulator.control.snapshot(table)
                    ]
                    ids = [i for v in held if v is not None for i in (v if isinstance(v, list) else [v])]
                    op = {"op": "delete_option", "entity": entity, "field_code": field["field_code"]}
                    ops.append({**op, "option_id": max(set(ids), key=ids.count)})
        assert {op["entity"] for op in ops} == {"deal", "product"}
        emulator.control.mutate(ops=ops)
        sync(emulator, tmp_path, entities=tables)
        assert_equal_to_truth(emulator, tmp_path, tables)


def test_a_whole_first_value_in_the_truth_does_not_hide_the_others(tmp_path: Path) -> None:
    """The truth loader infers a column's type from its first value: at seed 9 the first deal's value is 0,
    so the truth put every other value in `value__v_double` and wanted NULL in `value`, where the sync
    (typed from the spec) rightly holds 39594.61."""
    with run_emulator(seed=9, scale="tiny") as emulator:
        assert isinstance(emulator.control.snapshot("deals")[0]["value"], int)
        sync(emulator, tmp_path, entities=["deals"])
        assert_equal_to_truth(emulator, tmp_path, ["deals"])
