"""Deletions that take other records with them, and when the destination learns of them: real syncs
against the emulator, rows in DuckDB compared with what the emulator holds, requests the emulator saw."""

from __future__ import annotations

from pathlib import Path

from connector_fixtures import SyncResult, assert_equal_to_truth, assert_no_change_budget, sync, synced_rows

from pipedrive_source.emulator import EmulatorHandle
from pipedrive_source.emulator.company import Company


def test_a_deleted_task_takes_its_subtasks_along(emulator: EmulatorHandle, tmp_path: Path) -> None:
    """The spec's deleteTask: "If the task has subtasks, those will also be deleted." The emulator deleted
    the task alone, its subtasks stayed listed (and loaded) as live tasks of a task that no longer was."""
    sync(emulator, tmp_path, entities=["tasks"])
    tasks = emulator.control.snapshot("tasks")
    parent = next(t["parent_task_id"] for t in tasks if t["parent_task_id"] is not None)
    subtasks = {t["id"] for t in tasks if t["parent_task_id"] == parent}
    deleted = emulator.control.mutate(ops=[{"op": "delete", "table": "tasks", "id": parent}])["deleted"]
    assert set(deleted["tasks"]) == {parent, *subtasks}
    assert not {t["id"] for t in emulator.control.snapshot("tasks")} & {parent, *subtasks}

    result = sync(emulator, tmp_path, entities=["tasks"], full_read_interval_hours=0)
    assert result.flagged == {"tasks": 1 + len(subtasks)}
    rows = {row["id"]: row for row in synced_rows(result.pipeline, "tasks")}
    assert all(rows[i]["is_deleted"] for i in (parent, *subtasks))
    assert_equal_to_truth(emulator, tmp_path, ["tasks"])


def test_no_generated_subtask_outlives_its_deleted_task() -> None:
    company = Company.generate(seed=7, scale="small")
    tasks = company.t["tasks"]
    gone = {i for i, task in tasks.rows.items() if tasks.view_of(task) == "deleted"}
    assert gone
    assert all(task["id"] in gone for task in tasks.rows.values() if task["parent_task_id"] in gone)


def test_a_deleted_pipeline_or_stage_is_flagged_by_the_next_plain_run(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Pipelines and stages were read newest first, stopping at the last loaded change: a deleted one
    ("Marks a pipeline as deleted"; the list leaves it out) was never read again and stayed live in the
    destination until a reconcile. Each list fits one page: read whole every run at the same one request,
    the ids it lacks are flagged."""
    tables = ["pipelines", "stages"]
    sync(emulator, tmp_path, entities=tables)
    stages = emulator.control.snapshot("stages")
    pipeline = stages[0]["pipeline_id"]
    stage = next(s["id"] for s in stages if s["pipeline_id"] != pipeline)
    ops = [
        {"op": "delete", "table": "pipelines", "id": pipeline},
        {"op": "delete", "table": "stages", "id": stage},
    ]
    emulator.control.mutate(ops=ops)

    result = sync(emulator, tmp_path, entities=tables)
    assert result.flagged == {"pipelines": 1, "stages": 1}
    assert _listings(result) == {"/api/v2/pipelines": 1, "/api/v2/stages": 1}
    assert {row["id"] for row in synced_rows(result.pipeline, "pipelines") if row["is_deleted"]} == {pipeline}
    assert {row["id"] for row in synced_rows(result.pipeline, "stages") if row["is_deleted"]} == {stage}
    assert_equal_to_truth(emulator, tmp_path, tables)

    again = sync(emulator, tmp_path, entities=tables)  # nothing changed: nothing loaded or flagged again
    assert (again.loaded, again.flagged) == ({}, {})
    assert _listings(again) == {"/api/v2/pipelines": 1, "/api/v2/stages": 1}


def _listings(result: SyncResult) -> dict[str, int]:
    """Requests per endpoint, but the company check every run makes (`/v1/users/me`)."""
    return {path: n for path, n in result.emulator_stats["requests"].items() if path != "/v1/users/me"}


def test_a_plain_run_without_changes_still_costs_one_request_per_entity(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    sync(emulator, tmp_path)
    second = sync(emulator, tmp_path)
    assert (second.loaded, second.flagged) == ({}, {})
    assert_no_change_budget(second)


DEAL_CHILDREN = [
    "deal_products",
    "deal_installments",
    "deal_discounts",
    "deal_flow",
    "deal_participants",
]


def test_a_deleted_deal_takes_its_child_rows_along_in_a_plain_run(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """README's deletion table: a deleted deal is listed again (`status` deleted), its children are asked
    for again, Pipedrive has none (or answers 404), and its rows leave every child table; its followers are
    as Pipedrive lists them then (the emulator still lists those of a deal deleted within 30 days)."""
    tables = ["deals", *DEAL_CHILDREN, "deal_followers"]
    sync(emulator, tmp_path, entities=tables)
    having = [{row["deal_id"] for row in emulator.control.snapshot(child)} for child in DEAL_CHILDREN]
    deal = min(set.intersection(*having))
    emulator.control.mutate(ops=[{"op": "delete", "table": "deals", "id": deal}])

    result = sync(emulator, tmp_path, entities=tables)
    assert next(r for r in synced_rows(result.pipeline, "deals") if r["id"] == deal)["is_deleted"]
    for child in DEAL_CHILDREN:
        assert not [row for row in synced_rows(result.pipeline, child) if row["deal_id"] == deal], child
    assert_equal_to_truth(emulator, tmp_path, tables)


def test_the_relationships_of_an_organization_merged_away_go_with_the_next_reconcile(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """README's deletion table: Pipedrive's merge tutorial moves activities, emails, filters, notes,
    products, followers and participants, not relationships: those of the organization merged away leave
    Pipedrive with it. A plain run cannot know it is gone (the kept one is loaded, its own relationships
    read again); the next reconcile removes its rows and the other organizations' rows pointing at it."""
    tables = ["organizations", "organization_relationships"]
    sync(emulator, tmp_path, entities=tables)
    related = emulator.control.snapshot("organization_relationships")
    gone = related[0]["org_id"]
    kept = next(o["id"] for o in emulator.control.snapshot("organizations") if o["id"] != gone)
    emulator.control.mutate(
        ops=[{"op": "merge", "table": "organizations", "id": gone, "merge_with_id": kept}]
    )
    pointing = {
        (r["org_id"], r["id"]) for r in related if gone in (r["org_id"], r["calculated_related_org_id"])
    }
    assert pointing

    def held(result: SyncResult) -> set[tuple[int, int]]:
        rows = synced_rows(result.pipeline, "organization_relationships")
        return {(r["org_id"], r["id"]) for r in rows if gone in (r["org_id"], r["calculated_related_org_id"])}

    assert held(sync(emulator, tmp_path, entities=tables)) == pointing  # not known yet
    assert held(sync(emulator, tmp_path, entities=tables, reconcile=True)) == set()
    assert_equal_to_truth(emulator, tmp_path, tables)
