"""Concurrent changes: records created, updated, deleted and archived in Pipedrive while a sync pages through
them are picked up by that run or the next, never lost; equal `update_time` values across page boundaries
and at the boundary between two runs neither drop nor duplicate a record.

The mutation is issued from a record hook at a chosen page of a chosen entity: the hook runs after that page
was fetched and before the next page is requested, so the change lands between two page requests of the
same listing, deterministically (no thread racing the sync, no sleeps). Small pages (`page_size=5`) make the
tiny company span several pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from connector_fixtures import sync, synced_rows
from reliability_support import (
    EXACT,
    LEDGER,
    AtPage,
    assert_equal_to_truth,
    epoch,
    ledger_logs,  # noqa: F401
    secret_emulator,
)

from pipedrive_source.client import PipedriveClient
from pipedrive_source.emulator import EmulatorHandle
from pipedrive_source.oauth import ApiTokenAuth
from pipedrive_source.pagination import offset_pages

pytestmark = pytest.mark.usefixtures("ledger_logs")
PAGE = 5
TABLES = ["deals", "deal_products", "persons", "notes", "leads"]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[EmulatorHandle]:
    LEDGER.path(tmp_path)
    with secret_emulator() as handle:
        yield handle


def run(emulator: EmulatorHandle, workdir: Path, *hooks: AtPage, **options: Any):
    return sync(
        emulator, workdir, entities=TABLES, page_size=PAGE, record_hooks=list(hooks), **EXACT, **options
    )


def ids_of(pages: list[list[dict]]) -> list[Any]:
    return [row["id"] for page in pages for row in page]


def live(emulator: EmulatorHandle, table: str) -> list[dict]:
    return [
        r for r in emulator.control.snapshot(table) if not r.get("is_deleted") and r.get("active_flag", True)
    ]


def test_changes_while_deals_page_through_arrive_this_run_or_the_next(emulator, tmp_path: Path) -> None:
    before = {r["id"] for r in live(emulator, "deals")}

    def change_everything(pages: list[list[dict]]) -> dict:
        read = ids_of(pages)
        ahead = sorted(before - set(read))  # not read yet
        ops = [
            {
                "op": "update",
                "table": "deals",
                "id": read[0],
                "changes": {"title": "changed behind the cursor"},
            },
            {"op": "update", "table": "deals", "id": ahead[-1], "changes": {"title": "changed ahead"}},
            {"op": "delete", "table": "deals", "id": ahead[0]},
            {"op": "archive_deal", "id": ahead[1]},
            {"op": "create", "table": "deals", "values": {"title": "created mid-run"}},
            {
                "op": "update",
                "table": "persons",
                "id": live(emulator, "persons")[0]["id"],
                "changes": {"name": "person changed mid-run"},
            },
        ]
        return emulator.control.mutate(ops=ops)

    hook = AtPage("deals", 2, change_everything)
    run(emulator, tmp_path, hook)
    assert hook.fired
    touched = {
        i
        for kind in ("updated", "deleted", "archived", "created")
        for i in hook.result[kind].get("deals", [])
    }
    synced = {row["id"] for row in synced_rows_of(tmp_path, "deals")}
    assert before - touched <= synced  # nothing untouched was skipped by the shifting lists

    run(emulator, tmp_path)  # the next run brings whatever the first one could not see
    assert_equal_to_truth(emulator, tmp_path, TABLES)
    deals = {row["id"]: row for row in synced_rows_of(tmp_path, "deals")}
    assert any(row["title"] == "created mid-run" for row in deals.values())


def test_equal_update_times_across_page_boundaries(emulator, tmp_path: Path) -> None:
    run(emulator, tmp_path)
    ops = []
    for table, column in (("deals", "title"), ("persons", "name"), ("notes", "content"), ("leads", "title")):
        for record in live(emulator, table)[: 3 * PAGE - 2]:  # one second, spread over three pages
            ops.append(
                {
                    "op": "update",
                    "table": table,
                    "id": record["id"],
                    "changes": {column: f"same {record['id']}"},
                }
            )
    changed = emulator.control.mutate(ops=ops)
    result = run(emulator, tmp_path)
    for table in ("deals", "persons", "notes", "leads"):
        assert result.loaded.get(table, 0) >= len(changed["updated"][table]), (table, result.loaded)
    assert_equal_to_truth(emulator, tmp_path, TABLES)


def test_equal_update_time_at_the_run_boundary(emulator, tmp_path: Path) -> None:
    """A change in the very second the last run loaded up to (`updated_since` is inclusive)."""
    run(emulator, tmp_path)
    first = emulator.control.mutate(seed=3, updates=12)
    run(emulator, tmp_path)  # loads up to the second of `first`
    boundary = epoch(first["clock"])
    same_second = []
    for table, column in (("deals", "title"), ("persons", "name"), ("notes", "content")):
        loaded_at_boundary = first["updated"].get(table, [])
        others = [r["id"] for r in live(emulator, table) if r["id"] not in loaded_at_boundary]
        for rid in [
            *loaded_at_boundary[:1],
            *others[:2],
        ]:  # one changed again, two changed for the first time
            changes = {column: f"boundary {rid}", "update_time": boundary}
            same_second.append({"op": "update", "table": table, "id": rid, "changes": changes})
    emulator.control.mutate(advance_seconds=1, ops=same_second)
    run(emulator, tmp_path)
    assert_equal_to_truth(emulator, tmp_path, TABLES)


def test_a_change_in_the_run_s_own_second_behind_the_cursor(emulator, tmp_path: Path) -> None:
    """Changed after its page was read, stamped with the second the run started in: next run picks it up."""
    run(emulator, tmp_path)
    emulator.control.mutate(seed=5, updates=15)

    def change_what_was_read(pages: list[list[dict]]) -> dict:
        clock = epoch(emulator.control.mutate(ops=[{"op": "advance_clock", "seconds": 1}])["clock"]) - 2
        rid = pages[0][0]["id"]  # the run started at `clock`: the same second, for Pipedrive
        changes = {"title": "changed in the run's second", "update_time": clock}
        return emulator.control.mutate(
            advance_seconds=1, ops=[{"op": "update", "table": "deals", "id": rid, "changes": changes}]
        )

    hook = AtPage("deals", 1, change_what_was_read)
    run(emulator, tmp_path, hook)
    assert hook.fired
    run(emulator, tmp_path)
    assert_equal_to_truth(emulator, tmp_path, TABLES)


def test_a_record_read_twice_in_one_load_keeps_its_newest_version(emulator, tmp_path: Path) -> None:
    """Changed after its page was read and listed again further on in the same run (an ascending read: a
    v2 change within the run's own second, any v1 change during a first load): the load holds two versions
    of one id, and the newer must be the one kept. The cursor's boundary remembers the newer one, so a
    stale row kept there would never be read again."""
    start = epoch(emulator.control.mutate(ops=[{"op": "advance_clock", "seconds": 1}])["clock"])

    def change(table: str, column: str, stamp: int | None) -> AtPage:
        def action(pages: list[list[dict]]) -> dict:
            changes: dict[str, Any] = {column: f"changed after page 1 of {table}"}
            if stamp is not None:
                changes["update_time"] = stamp  # within `updated_until`: read again this run
            op = {"op": "update", "table": table, "id": pages[0][0]["id"], "changes": changes}
            return emulator.control.mutate(advance_seconds=1, ops=[op])

        return AtPage(table, 1, action)

    hooks = [change("deals", "title", start), change("notes", "content", None)]
    first = run(emulator, tmp_path, *hooks, workers=1)
    assert all(hook.fired for hook in hooks)
    for table in ("deals", "notes"):  # read twice: the case this test is about really happened
        assert first.loaded[table] > len(live(emulator, table)), (table, first.loaded)
    assert_equal_to_truth(emulator, tmp_path, ["deals", "notes"])
    run(emulator, tmp_path)
    assert_equal_to_truth(emulator, tmp_path, TABLES)


def test_deletions_while_v1_notes_page_through_lose_nothing(emulator, tmp_path: Path) -> None:
    def delete_what_was_read(pages: list[list[dict]]) -> dict:
        read = ids_of(pages)[:3]  # three records before the next offset vanish: the list shifts by three
        return emulator.control.mutate(ops=[{"op": "delete", "table": "notes", "id": rid} for rid in read])

    hook = AtPage("notes", 2, delete_what_was_read)
    run(emulator, tmp_path, hook)  # the first, full load
    assert hook.fired
    run(emulator, tmp_path, reconcile=True)  # even a reconcile run afterwards
    assert_equal_to_truth(emulator, tmp_path, ["notes"])


@pytest.mark.parametrize("deleted", [0, 3, 12])
def test_an_id_listing_that_shifts_while_paging_still_lists_every_live_id(emulator, deleted: int) -> None:
    """The reconcile run's id listing (sequential v1 offset pages, sorted by id): records deleted behind
    the offset shift the list; each page must still overlap the ones before it, or the listing steps
    back, so no live id goes missing (a missing one would be flagged deleted). Without deletions it
    makes exactly the requests it always made."""
    client = PipedriveClient(emulator.base_url, ApiTokenAuth(emulator.api_token))
    before = [r["id"] for r in live(emulator, "notes")]
    pages = offset_pages(
        client, "/v1/notes", {"sort": "id ASC"}, cost=20, label="notes", page_size=PAGE, overlap=1
    )
    listed: list[Any] = []
    for number, page in enumerate(pages, start=1):
        listed += [row["id"] for row in page.items]
        if number == 2 and deleted:
            ops = [{"op": "delete", "table": "notes", "id": rid} for rid in listed[-deleted:]]
            emulator.control.mutate(ops=ops)
    assert set(r["id"] for r in live(emulator, "notes")) <= set(listed)
    assert set(listed) <= set(before)
    if not deleted:
        assert client.stats.requests == -(-(len(before) - 1) // (PAGE - 1))  # pages of 5 re-reading 1


def synced_rows_of(workdir: Path, table: str) -> list[dict]:
    from connector_fixtures import make_pipeline

    return synced_rows(make_pipeline(workdir), table)


def test_deletions_while_call_logs_are_read_in_full_flag_no_live_record(emulator, tmp_path: Path) -> None:
    """A full offset read (call logs: no sort, no filter) whose list shifts between two pages has a gap: the
    records in it were not listed, so they must not be flagged deleted, and the next run reads in full
    again instead of waiting for the full-read interval."""

    def delete_what_was_read(pages: list[list[dict]]) -> dict:
        ops = [{"op": "delete", "table": "call_logs", "id": rid} for rid in ids_of(pages)[:3]]
        return emulator.control.mutate(ops=ops)

    daily = {**EXACT, "entities": ["call_logs"], "page_size": PAGE, "workers": 1}
    daily["full_read_interval_hours"] = 24
    sync(emulator, tmp_path, **daily)
    hook = AtPage("call_logs", 2, delete_what_was_read)
    sync(emulator, tmp_path, record_hooks=[hook], **{**daily, "full_read_interval_hours": 0})
    assert hook.fired
    live_ids = {r["id"] for r in live(emulator, "call_logs")}
    rows = synced_rows_of(tmp_path, "call_logs")
    flagged = [r["id"] for r in rows if r["is_deleted"] and r["id"] in live_ids]
    assert not flagged, f"live call logs flagged deleted: {flagged}"
    sync(emulator, tmp_path, **daily)  # within the interval, yet read in full: the last read had a gap
    assert_equal_to_truth(emulator, tmp_path, ["call_logs"])
