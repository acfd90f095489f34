"""The connector against the emulator (scale tiny): full sync, no-change run, incremental run after mutations,
reconcile, hard deletes, child sets of changed deals. Every comparison is row by row with the ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest
from connector_fixtures import ALL_TABLES, DEFAULT_TABLES, compare, load_truth, sync, synced_rows

from pipedrive_source.entities import BY_NAME, FULL, PER_PARENT, PER_RECORD, UPDATED_SINCE

INCREMENTAL_ENDPOINTS = {  # list endpoints whose request count must not grow with the company's size
    "/api/v2/activities",
    "/api/v2/deals",
    "/api/v2/deals/archived",
    "/api/v2/persons",
    "/api/v2/organizations",
    "/api/v2/products",
    "/api/v2/pipelines",
    "/api/v2/stages",
    "/v1/leads",
    "/v1/leads/archived",
    "/v1/notes",
    "/v1/files",
}


def assert_equal_to_truth(emulator, workdir: Path, tables: list[str], hard_delete: bool = False) -> None:
    truth = load_truth(emulator, workdir, tables)
    problems = {t: p for t in tables if (p := compare(workdir / "crm.duckdb", truth, t, hard_delete))}
    assert not problems, {t: p[:5] for t, p in problems.items()}


def expected_no_change_requests(emulator, entities: list[str]) -> int:
    """One request per list endpoint, one per board for phases; pages beyond the first only for the
    lists that can be neither filtered nor sorted (read in full every run)."""
    total = 0
    counts = emulator.control.counts()
    for name in entities:
        entity = BY_NAME[name]
        if entity.strategy == PER_RECORD or entity.merge_key:
            continue  # children of changed parents: no parent changed, no request
        if entity.strategy == PER_PARENT:
            total += counts[entity.parent]
        elif entity.strategy == FULL and entity.page_size:
            size, step = entity.page_size, entity.page_size - max(1, entity.page_size // 100)  # overlap
            total += len(entity.listings) * (1 + -(-max(0, counts[name] - size) // step))
        else:
            total += len(entity.listings)
    return total


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
    assert second.requests == second.emulator_stats["total_requests"]
    assert second.requests <= expected_no_change_requests(emulator, DEFAULT_TABLES)
    per_endpoint = second.emulator_stats["requests"]
    assert all(per_endpoint.get(path, 0) <= 2 for path in INCREMENTAL_ENDPOINTS), per_endpoint
    for child in ("/api/v2/deals/products", "/api/v2/deals/installments", "/api/v2/products/{id}/variations"):
        assert child not in per_endpoint


def test_mutations_sync_incrementally_and_flag_deleted_deals(emulator, tmp_path: Path) -> None:
    full = sync(emulator, tmp_path, entities=ALL_TABLES)
    changes = emulator.control.mutate(seed=11, creates=12, updates=40, deletes=10, archives=6)
    result = sync(emulator, tmp_path, entities=ALL_TABLES)

    # only the changes travelled: a handful of requests per endpoint, far fewer rows than the full sync
    per_endpoint = result.emulator_stats["requests"]
    assert all(per_endpoint.get(path, 0) <= 2 for path in INCREMENTAL_ENDPOINTS), per_endpoint
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
    assert_equal_to_truth(emulator, tmp_path, [t for t in ALL_TABLES if t not in vanished])


def test_reconcile_flags_every_record_pipedrive_no_longer_lists(emulator, tmp_path: Path) -> None:
    sync(emulator, tmp_path, entities=ALL_TABLES)
    changes = emulator.control.mutate(seed=12, creates=5, updates=10, deletes=12, archives=2)
    sync(emulator, tmp_path, entities=ALL_TABLES)
    result = sync(emulator, tmp_path, entities=ALL_TABLES, reconcile=True)

    assert result.loaded == {}  # reconcile lists ids; it loads no rows
    for table, ids in changes["deleted"].items():
        if BY_NAME[table].strategy == UPDATED_SINCE and table != "deals":
            assert result.flagged.get(table) == len(ids), (table, result.flagged)
    assert_equal_to_truth(emulator, tmp_path, ALL_TABLES)
    rows = {row["id"]: row for row in synced_rows(result.pipeline, "activities")}
    for activity_id in changes["deleted"].get("activities", []):
        assert rows[activity_id]["is_deleted"] is True
        assert rows[activity_id]["subject"]  # flagged in place: the last known content is kept


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


def test_start_date_limits_the_first_load(emulator, tmp_path: Path) -> None:
    deals = emulator.control.snapshot("deals")
    times = sorted(d["update_time"] for d in deals)
    cutoff = times[len(times) // 2]
    result = sync(emulator, tmp_path, entities=["deals", "notes"], start_date=cutoff)
    loaded = synced_rows(result.pipeline, "deals")
    assert {d["id"] for d in loaded} == {d["id"] for d in deals if d["update_time"] >= cutoff}
    notes = emulator.control.snapshot("notes")
    assert len(synced_rows(result.pipeline, "notes")) == sum(
        1 for n in notes if n["update_time"] >= cutoff[:10]
    )


def test_unknown_entity_and_bad_settings_are_one_line_errors(emulator) -> None:
    from pipedrive_source import ConfigError, pipedrive_source

    with pytest.raises(ConfigError, match="Unknown entity nope"):
        pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, entities=["deals", "nope"])
    with pytest.raises(ConfigError, match="start_date"):
        pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, start_date="soon")
    with pytest.raises(ConfigError, match="base_url"):
        pipedrive_source(api_token=emulator.api_token, base_url="ftp://x")
    with pytest.raises(ConfigError, match="page_size"):
        pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, page_size=501)
