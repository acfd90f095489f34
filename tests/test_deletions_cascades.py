"""Deletions that take other records with them, and when the destination learns of them: real syncs
against the emulator, rows in DuckDB compared with what the emulator holds, requests the emulator saw."""

from __future__ import annotations

from pathlib import Path

from connector_fixtures import assert_equal_to_truth, sync, synced_rows

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
