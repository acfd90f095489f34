"""The connector under rate limits, over HTTP against the emulator: concurrent fetching paced to a small burst
limit without a 429, a run that stops cleanly when the daily budget (or its share of it) runs out and a next
run that continues where it stopped, and time windows that read every record exactly once.

Every run ends compared with the emulator's ground truth, so "stopped cleanly" means: nothing loaded was
lost, nothing skipped, the state pointed to the right place.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from connector_fixtures import DEFAULT_TABLES, assert_equal_to_truth, make_pipeline, sync

from pipedrive_source.emulator import EmulatorHandle, run_emulator

ROOT = Path(__file__).resolve().parent.parent
TABLES = ["deals", "persons", "organizations", "activities", "notes", "leads", "users", "deal_fields"]


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with run_emulator(seed=11, scale="tiny") as handle:
        yield handle


@pytest.fixture
def fresh(emulator: EmulatorHandle) -> EmulatorHandle:
    emulator.control.settings(burst_limit=100, daily_budget=1_500_000, budget_period_s=0)
    emulator.control.reset_ratelimit()
    emulator.control.reset_stats()
    return emulator


def test_concurrent_sync_at_a_small_burst_limit_gets_no_429(fresh: EmulatorHandle, tmp_path: Path) -> None:
    fresh.control.settings(burst_limit=6)
    result = sync(fresh, tmp_path, entities=TABLES, page_size=10)  # many small pages: many requests
    assert result.requests > 40
    assert result.emulator_stats["rate_limited"] == {"burst": 0, "daily": 0, "injected": 0}
    assert result.monitor.client_stats.rate_limit_waits == 0
    assert_equal_to_truth(fresh, tmp_path, TABLES)


def test_time_windows_read_every_record_once(fresh: EmulatorHandle, tmp_path: Path) -> None:
    """Pages of 5 make the `updated_since` lists long enough to be split into concurrent windows."""
    result = sync(fresh, tmp_path, entities=["activities", "persons", "deals"], page_size=5)
    assert_equal_to_truth(fresh, tmp_path, ["activities", "persons", "deals"])
    fresh.control.mutate(seed=5, creates=6, updates=12)  # (deletions need a reconcile run to show)
    again = sync(fresh, tmp_path, pipeline=result.pipeline, entities=["activities", "persons", "deals"])
    assert again.rows > 0
    assert_equal_to_truth(fresh, tmp_path, ["activities", "persons", "deals"])


def test_a_used_up_budget_stops_cleanly_and_the_next_run_continues(
    fresh: EmulatorHandle, tmp_path: Path
) -> None:
    (tmp_path / "measure").mkdir()
    full = sync(fresh, tmp_path / "measure", page_size=10)
    fresh.control.settings(daily_budget=full.tokens // 2)
    fresh.control.reset_ratelimit()

    stopped = sync(fresh, tmp_path, page_size=10)  # returns normally: a clean stop is not a failure
    assert stopped.monitor.stopped and "resets in about" in stopped.monitor.stopped
    assert stopped.emulator_stats["rate_limited"]["daily"] == 0  # it stopped before Pipedrive refused
    assert 0 < stopped.tokens <= full.tokens // 2
    assert stopped.rows > 0  # what was fetched was loaded

    fresh.control.settings(daily_budget=1_500_000)  # the next day
    fresh.control.reset_ratelimit()
    resumed = sync(fresh, tmp_path, pipeline=stopped.pipeline, page_size=10)
    assert resumed.monitor.stopped is None
    assert resumed.tokens < full.tokens  # it did not start over
    assert_equal_to_truth(fresh, tmp_path, DEFAULT_TABLES)


def test_a_budget_used_up_before_anything_was_read_stops_every_resource_cleanly(
    fresh: EmulatorHandle, tmp_path: Path
) -> None:
    """Nothing can be afforded: the entities and the custom-field tables (whose field definitions no entity
    fetched) all stop on the budget, and the run ends as a budget stop, not as a failure (it failed now
    and then when the custom-field tables were the first to need a request after the budget ran out)."""
    fresh.control.settings(daily_budget=1)
    stopped = sync(fresh, tmp_path, entities=["deals", "persons"])  # returns: a clean stop, not a failure
    assert stopped.monitor.stopped and "resets in about" in stopped.monitor.stopped
    assert stopped.rows == 0 and stopped.tokens == 0
    assert stopped.emulator_stats["rate_limited"]["daily"] > 0  # Pipedrive was the one to say so


def test_runs_capped_by_their_budget_share_complete_a_sync_together(
    fresh: EmulatorHandle, tmp_path: Path
) -> None:
    (tmp_path / "measure").mkdir()
    full = sync(fresh, tmp_path / "measure", entities=TABLES, page_size=10)
    fresh.control.settings(daily_budget=full.tokens * 2)
    pipeline = make_pipeline(tmp_path)
    runs = []
    for _ in range(6):  # a run's share must exceed what every run reads anyway (field definitions...)
        fresh.control.reset_ratelimit()  # each run gets its share of a fresh day
        run = sync(fresh, tmp_path, pipeline=pipeline, entities=TABLES, page_size=10, max_budget_share=0.35)
        runs.append(run)
        assert run.tokens <= full.tokens * 2 * 0.35
        if run.monitor.stopped is None:
            break
    assert len(runs) > 1 and "max_budget_share=0.35" in (runs[0].monitor.stopped or "")
    assert runs[-1].monitor.stopped is None
    assert_equal_to_truth(fresh, tmp_path, TABLES)


def test_cli_exits_3_with_the_reset_time_when_the_budget_runs_out(
    fresh: EmulatorHandle, tmp_path: Path
) -> None:
    fresh.control.settings(daily_budget=150)
    env = {
        **os.environ,
        "SOURCES__PIPEDRIVE__API_TOKEN": fresh.api_token,
        "SOURCES__PIPEDRIVE__BASE_URL": fresh.base_url,
        "DESTINATION__DUCKDB__CREDENTIALS": str(tmp_path / "crm.duckdb"),
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    script = ROOT / "pipelines" / "pipedrive_pipeline.py"
    command = [sys.executable, str(script), "--pipelines-dir", str(tmp_path / "pipelines"), "--quiet"]
    command.append("--no-views")
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 3, done.stderr
    assert "daily API token budget is used up; it resets in about" in done.stderr
    assert "total:" in done.stdout  # the summary of what was loaded


def test_a_budget_stop_between_changed_deals_and_their_children_reads_them_again(
    fresh: EmulatorHandle, tmp_path: Path
) -> None:
    """Deals changed in one second, loaded; the budget ran out before all their flow and participants were
    read. The deals' cursor went back to that second, but kept its boundary (the deals of that second
    already loaded, skipped when read again unchanged): the next run read nothing, and the flow and
    participants of those deals stayed as they were, for good."""
    tables = ["deals", "deal_flow", "deal_participants"]
    sync(fresh, tmp_path, entities=tables)
    live = sorted(r["id"] for r in fresh.control.snapshot("deals") if not r["is_deleted"])[:6]
    edits = [{"op": "update", "table": "deals", "id": d, "changes": {"title": f"edited {d}"}} for d in live]
    fresh.control.mutate(ops=edits)  # one second for all of them: the cursor's boundary
    fresh.control.settings(daily_budget=100)  # the deals and a few of their children's requests
    fresh.control.reset_ratelimit()

    stopped = sync(fresh, tmp_path, entities=tables)
    assert stopped.monitor.stopped and stopped.loaded["deals"] == len(live)
    assert stopped.loaded.get("deal_flow", 0) + stopped.loaded.get("deal_participants", 0) > 0  # some

    fresh.control.settings(daily_budget=1_500_000)  # the next day
    fresh.control.reset_ratelimit()
    resumed = sync(fresh, tmp_path, entities=tables)
    assert resumed.monitor.stopped is None
    assert_equal_to_truth(fresh, tmp_path, tables)
