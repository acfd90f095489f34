"""Optional SCD2 history (`history.add_history`): stage changes between syncs become versions, at no extra API
request; unchanged and absent records stay current; destinations without scd2 are skipped with a notice."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import pytest
from connector_fixtures import assert_history_is, make_pipeline, synced_rows
from dlt.pipeline.exceptions import PipelineStepFailed
from reliability_support import assert_read_twice_keeps_one_current_version
from test_reliability_bad_input import NON_FINITE, inject_non_finite, non_finite_problems

from pipedrive_source import SyncMonitor, pipedrive_source
from pipedrive_source.deletions import flag_vanished
from pipedrive_source.emulator import EmulatorHandle, run_emulator
from pipedrive_source.errors import ConfigError
from pipedrive_source.history import add_history

ENTITIES = ["deals", "stages"]


def run(
    emulator: EmulatorHandle, pipeline: dlt.Pipeline, history: list[str]
) -> tuple[list[str], SyncMonitor]:
    monitor = SyncMonitor()
    source = pipedrive_source(
        api_token=emulator.api_token, base_url=emulator.base_url, entities=ENTITIES, monitor=monitor
    )
    added = add_history(source, history, pipeline)
    pipeline.run(source, loader_file_format="parquet")
    return added, monitor


def versions(pipeline: dlt.Pipeline) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for row in sorted(synced_rows(pipeline, "deals_history"), key=lambda r: (r["id"], r["valid_from"])):
        out.setdefault(row["id"], []).append(row)
    return out


def requests(monitor: SyncMonitor) -> dict[str, int]:
    """Requests per entity (the run-clock call `users/me` depends on which resource happens to go first)."""
    stats = monitor.client_stats.by_label if monitor.client_stats else {}
    return {label: stats[label].requests for label in ENTITIES if label in stats}


def test_stage_changes_between_syncs_are_kept_as_versions(emulator: EmulatorHandle, tmp_path: Path) -> None:
    pipeline, plain = make_pipeline(tmp_path), make_pipeline(tmp_path / "plain", name="plain")
    added, with_history = run(emulator, pipeline, ["deals"])
    assert added == ["deals_history"]
    assert requests(with_history) == requests(run(emulator, plain, [])[1])  # history costs no request
    deals = emulator.control.snapshot("deals")
    first = versions(pipeline)
    assert set(first) == {d["id"] for d in deals}
    assert all(len(v) == 1 and v[0]["valid_to"] is None for v in first.values())

    live = [d for d in deals if d["status"] == "open" and not d["is_deleted"] and not d["is_archived"]]
    stages = sorted({d["stage_id"] for d in deals})
    moved = {d["id"]: next(s for s in stages if s != d["stage_id"]) for d in live[:3]}
    emulator.control.mutate(
        ops=[
            {"op": "update", "table": "deals", "id": i, "changes": {"stage_id": s}} for i, s in moved.items()
        ]
    )
    _, with_history = run(emulator, pipeline, ["deals"])
    assert requests(with_history) == requests(run(emulator, plain, [])[1])

    after = versions(pipeline)
    for deal in deals:
        history = after[deal["id"]]
        if deal["id"] in moved:  # old stage closed when the new one was seen, new stage current
            assert [v["stage_id"] for v in history] == [deal["stage_id"], moved[deal["id"]]]
            assert history[0]["valid_to"] == history[1]["valid_from"]
            assert history[1]["valid_to"] is None
        else:  # not in the incremental run: still the one current version
            assert len(history) == 1 and history[0]["valid_to"] is None
    current = {row["id"]: row["stage_id"] for row in synced_rows(pipeline, "deals")}
    assert all(current[i] == s for i, s in moved.items())


def test_a_no_change_run_adds_no_version(emulator: EmulatorHandle, tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path)
    run(emulator, pipeline, ["deals"])
    before = synced_rows(pipeline, "deals_history")
    run(emulator, pipeline, ["deals"])
    assert len(synced_rows(pipeline, "deals_history")) == len(before)


def test_non_finite_numbers_in_a_history(tmp_path: Path) -> None:
    """An entity with history hands dlt its records as they are: a "NaN" or "1e999" in a number column
    loaded as NaN or inf in the entity's table and its history, and their SUM() was NaN or inf."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        pipeline = make_pipeline(tmp_path)
        texts = inject_non_finite(emulator)
        run(emulator, pipeline, ["deals"])
    assert non_finite_problems(tmp_path / "crm.duckdb", texts) == []
    kept = {row["value__v_text"] for row in synced_rows(pipeline, "deals_history")}
    assert set(NON_FINITE) <= kept


def test_history_is_skipped_where_the_destination_has_no_scd2(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    lake = dlt.destinations.filesystem(bucket_url=(tmp_path / "lake").as_uri())
    pipeline = make_pipeline(tmp_path, lake, name="lake")
    source = pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, entities=ENTITIES)
    assert add_history(source, ["deals"], pipeline) == []
    assert "deals_history" not in source.resources


def test_history_of_an_unknown_or_child_entity_is_refused(emulator: EmulatorHandle) -> None:
    source = pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, entities=ENTITIES)
    with pytest.raises(ConfigError, match="deal_products"):
        add_history(source, ["deal_products"])


def test_a_record_found_deleted_ends_its_current_version(emulator: EmulatorHandle, tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path)

    def sync(**options: Any) -> dict[str, int]:
        monitor = SyncMonitor()
        source = pipedrive_source(
            api_token=emulator.api_token,
            base_url=emulator.base_url,
            entities=["persons"],
            monitor=monitor,
            **options,
        )
        add_history(source, ["persons"], pipeline)
        pipeline.run(source, loader_file_format="parquet")
        return flag_vanished(pipeline, monitor)

    sync()
    gone = next(p["id"] for p in emulator.control.snapshot("persons") if not p["is_deleted"])
    emulator.control.mutate(ops=[{"op": "delete", "table": "persons", "id": gone}])
    assert sync(reconcile=True) == {"persons": 1}  # Pipedrive hides it: only the full id list tells

    live = {p["id"] for p in emulator.control.snapshot("persons") if not p["is_deleted"]}
    current = [row["id"] for row in synced_rows(pipeline, "persons_history") if row["valid_to"] is None]
    assert sorted(current) == sorted(live)  # one current version per live person, none for the deleted
    assert [
        row["valid_to"] is None for row in synced_rows(pipeline, "persons_history") if row["id"] == gone
    ] == [False]


def test_history_turned_on_and_off_on_a_pipeline_that_loaded_before(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Without history an entity's lists load as tables of their own, with it as dlt's nested tables (the
    history reads records): dlt refuses to turn one into the other, and each switch failed with a
    TablePropertiesConflictException about `deals__label_ids`, run after run."""
    pipeline = make_pipeline(tmp_path)

    def sync(history: list[str], **options: Any) -> None:
        source = pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, entities=ENTITIES)
        add_history(source, history, pipeline)
        pipeline.run(source, loader_file_format="parquet", **options)

    def change_a_deal() -> int:
        deal = next(d for d in emulator.control.snapshot("deals") if d["status"] == "open")
        emulator.control.mutate(ops=[{"op": "update", "table": "deals", "id": deal["id"], "changes": {}}])
        return deal["id"]

    sync([])
    change_a_deal()
    with pytest.raises(PipelineStepFailed, match="--full-refresh --entities deals --history deals") as failed:
        sync(["deals"])
    assert isinstance(failed.value.exception.__cause__, ConfigError)  # exit 2, this one line
    sync(["deals"], refresh="drop_resources")  # what the message says: history starts with every deal
    deals = emulator.control.snapshot("deals")
    assert sorted(v for v in versions(pipeline)) == sorted(d["id"] for d in deals)

    changed = change_a_deal()
    sync([])  # history off again: the deal still loads, with its labels
    loaded = {row["id"]: row for row in synced_rows(pipeline, "deals")}
    truth = next(d for d in emulator.control.snapshot("deals") if d["id"] == changed)
    assert loaded[changed]["update_time"] == datetime.fromisoformat(truth["update_time"])
    assert len(versions(pipeline)[changed]) == 1  # not seen by history while it was off


def test_a_custom_field_added_makes_no_version_of_unchanged_records(tmp_path: Path) -> None:
    """A field added in Pipedrive puts an empty value in every record; dlt's version hash counted it, so
    the next full read (here: a relabelled option) made a new version of every deal, changed or not (47 of
    47 where 9 had changed). Only the deals that changed get one now: edited, or holding that option."""
    with run_emulator(seed=3, scale="tiny") as emulator:
        pipeline = make_pipeline(tmp_path)
        run(emulator, pipeline, ["deals"])
        fields = [f for f in emulator.control.snapshot("deal_fields") if f["is_custom_field"]]
        enum = next(f for f in fields if f["field_type"] == "enum" and f["options"])
        option = enum["options"][0]["id"]
        deals = emulator.control.snapshot("deals")
        holders = {d["id"] for d in deals if d["custom_fields"].get(enum["field_code"]) == option}
        edited = {d["id"] for d in deals if d["id"] not in holders and not d["is_deleted"]}
        edited = set(sorted(edited)[:2])
        emulator.control.mutate(
            ops=[
                {"op": "add_field", "entity": "deal", "name": "Added later", "field_type": "varchar"},
                {
                    "op": "relabel_option",
                    "entity": "deal",
                    "field_code": enum["field_code"],
                    "option_id": option,
                    "label": "Relabelled",
                },
                *({"op": "update", "table": "deals", "id": i, "changes": {"title": f"t{i}"}} for i in edited),
            ]
        )
        run(emulator, pipeline, ["deals"])
    assert holders  # the test relabels an option some deals hold
    versioned = {deal_id for deal_id, history in versions(pipeline).items() if len(history) > 1}
    assert versioned == holders | edited


def test_a_budget_stop_and_the_resumed_run_keep_every_version_once(tmp_path: Path) -> None:
    """Pages of 5 (v1 offset pages overlap, incremental reads split into windows), a run stopped by the
    daily budget half way, changes, then the resumed run: each history holds one current version per
    record, equal to Pipedrive's, no version twice, and each version ends where the next begins. Notes had
    60 versions for 49 notes after the first run (the overlapping pages' records twice, both current)."""
    tables = ["deals", "persons", "notes"]
    with run_emulator(seed=11, scale="tiny") as emulator:
        pipeline = make_pipeline(tmp_path)

        def sync() -> SyncMonitor:
            monitor = SyncMonitor()
            source = pipedrive_source(
                api_token=emulator.api_token,
                base_url=emulator.base_url,
                entities=tables,
                monitor=monitor,
                page_size=5,
                backoff_base_s=0.01,
            )
            add_history(source, tables, pipeline)
            pipeline.run(source, loader_file_format="parquet")
            flag_vanished(pipeline, monitor)
            return monitor

        first = sync()
        assert_history_is(emulator, pipeline, tables)
        loaded = {table: versions_of(pipeline, table) for table in tables}
        emulator.control.mutate(seed=5, creates=6, updates=30)
        emulator.control.settings(daily_budget=first.client_stats.tokens // 3, budget_period_s=0)
        emulator.control.reset_ratelimit()
        assert sync().stopped
        stopped = {table: versions_of(pipeline, table) for table in tables}
        emulator.control.mutate(seed=6, creates=3, updates=20)
        emulator.control.settings(daily_budget=1_500_000)
        emulator.control.reset_ratelimit()
        assert sync().stopped is None
        assert_history_is(emulator, pipeline, tables)
        for table in tables:  # nothing loaded before is lost
            kept = versions_of(pipeline, table)
            assert all(v in kept for before in (loaded, stopped) for v in before[table])


def versions_of(pipeline: dlt.Pipeline, table: str) -> set[tuple[Any, Any, Any]]:
    return {(r["id"], r["update_time"], r["valid_from"]) for r in synced_rows(pipeline, f"{table}_history")}


def test_history_started_later_on_a_list_read_in_full_gets_every_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Lists without list fields can start a history without a full refresh. One read in full every run
    (activity types) held only the records changed since; its next full read, made anyway, now gives every
    record a version, at no request more. An incremental list (notes) reads only what changed: the run
    says how to give its history every record, and the next reconcile, which reads every record for its
    live ids, does so at no request more (the history held the one note changed since, and nothing more)."""
    tables = ["activity_types", "notes"]
    with run_emulator(seed=3, scale="tiny") as emulator:
        pipeline, plain = make_pipeline(tmp_path), make_pipeline(tmp_path / "plain", name="plain")

        def sync(into: dlt.Pipeline, history: list[str], reconcile: bool = False) -> dict[str, int]:
            monitor = SyncMonitor()
            source = pipedrive_source(
                api_token=emulator.api_token,
                base_url=emulator.base_url,
                entities=tables,
                monitor=monitor,
                reconcile=reconcile,
            )
            add_history(source, history, into)
            into.run(source, loader_file_format="parquet")
            flag_vanished(into, monitor)
            stats = monitor.client_stats.by_label if monitor.client_stats else {}
            return {table: stats[table].requests for table in tables}

        sync(pipeline, [])
        sync(plain, [])
        changed = {table: emulator.control.snapshot(table)[0]["id"] for table in tables}
        emulator.control.mutate(
            ops=[
                {"op": "update", "table": "activity_types", "id": changed["activity_types"], "changes": {}},
                {"op": "update", "table": "notes", "id": changed["notes"], "changes": {}},
            ]
        )
        with caplog.at_level(logging.WARNING, logger="pipedrive_source"):
            assert sync(pipeline, tables) == sync(plain, [])  # the seed costs no request
        types = {t["id"]: t for t in emulator.control.snapshot("activity_types")}
        seeded = synced_rows(pipeline, "activity_types_history")
        assert sorted(r["id"] for r in seeded) == sorted(types)  # one version each, current
        assert all(r["valid_to"] is None for r in seeded)
        assert [r["id"] for r in synced_rows(pipeline, "notes_history")] == [changed["notes"]]
        assert "notes_history starts with the notes that change from now on" in caplog.text
        assert "the next --reconcile gives it every record at no request more" in caplog.text
        assert "activity_types_history" not in caplog.text

        sync(pipeline, tables)  # seeded once: the next full reads give it the changed records only
        assert len(synced_rows(pipeline, "activity_types_history")) == len(types)

        # a reconcile lists every note for its live ids: they seed the history, at no request more
        assert sync(pipeline, tables, reconcile=True) == sync(plain, [], reconcile=True)
        notes = {n["id"] for n in emulator.control.snapshot("notes")}
        seeded = synced_rows(pipeline, "notes_history")
        assert sorted(r["id"] for r in seeded if r["valid_to"] is None) == sorted(notes)
        assert len(seeded) == len(notes)  # the note changed before had its version: not made twice
        sync(pipeline, tables, reconcile=True)  # seeded: reconciles give it nothing more
        assert len(synced_rows(pipeline, "notes_history")) == len(notes)


def test_a_record_changed_while_it_is_read_twice_has_one_current_version(tmp_path: Path) -> None:
    assert_read_twice_keeps_one_current_version(make_pipeline(tmp_path))
