"""One full sync of scale `small` (about 100k rows) and a no-change run after it, compared with the truth.

Prints the figures (rows, requests, tokens, seconds) so the suite's output documents them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from connector_fixtures import DEFAULT_TABLES, assert_no_change_budget, compare, load_truth, sync

from pipedrive_source.emulator import EmulatorHandle, run_emulator


@pytest.fixture(scope="module")
def small_emulator() -> Iterator[EmulatorHandle]:
    with run_emulator(seed=7, scale="small", burst_limit=10_000) as handle:
        yield handle


def test_small_full_sync_then_no_change_run(small_emulator: EmulatorHandle, tmp_path: Path) -> None:
    full = sync(small_emulator, tmp_path)
    print(
        f"\nsmall full sync: {full.rows:,} rows, {full.requests} requests, {full.tokens:,} tokens, "
        f"{full.seconds:.1f} s"
    )
    assert full.rows > 50_000
    assert full.requests == full.emulator_stats["total_requests"]
    assert full.tokens == full.emulator_stats["tokens_spent"]  # our accounting matches what was charged

    truth = load_truth(small_emulator, tmp_path, DEFAULT_TABLES)
    problems = {t: p for t in DEFAULT_TABLES if (p := compare(tmp_path / "crm.duckdb", truth, t))}
    assert not problems, {t: p[:5] for t, p in problems.items()}

    again = sync(small_emulator, tmp_path)
    print(
        f"small no-change run: {again.rows} rows, {again.requests} requests, {again.tokens} tokens, "
        f"{again.seconds:.1f} s; per endpoint {again.emulator_stats['requests']}"
    )
    assert again.loaded == {}
    assert_no_change_budget(again)
