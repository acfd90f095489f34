"""Model-based sync test: a seeded random walk of emulator mutations (record creates/updates/deletes/archives,
field renames, option relabels, new options and fields, deleted fields, same-second changes at the run
boundary, awkward values, persons and organizations merged, deals moved to another pipeline's stage, stages
deleted, pipelines, stages, boards and phases renamed, projects moved to another phase, followers added and
removed), each round followed by a sync; after every round every default table and the followers tables
equal the ground truth row by row (`reliability_support.compare_with_truth`; records a merge moved may keep
the old id until a reconcile, `Merges`; tables and mutations that expose a reported bug are left out, see
`KNOWN_BUGS`, each with a strict xfail test). A second walk adds: the connector's daily full-read interval
under clock jumps of hours to days, runs stopped by the daily budget, fields deleted and added again with
another type (`FEATURES`: with `hard_delete` too). The long walk: `tools/soak.py --features all` (with
`--entities followers` it walks the followers tables too).

A relabelled option reaches records not changed since by one full re-read of the entities using it (see
`source._reread_if_relabelled`): the tests below check that, and that other field changes cost no re-read."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from connector_fixtures import DATASET, DEFAULT_TABLES
from reliability_support import (  # noqa: F401
    FOLLOWER_TABLES,
    LEDGER,
    ModelWalk,
    compare_with_truth,
    ledger_logs,
    secret_emulator,
)

from pipedrive_source.emulator import EmulatorHandle

pytestmark = pytest.mark.usefixtures("ledger_logs")
CI_ROUNDS = 4
# its 4 rounds: awkward values; a field deleted and two persons or organizations merged; a batch and a deal
# moved to another pipeline, with the reconcile that must load what the merge moved; a follower added
CI_SEED = 151
CI_TABLES = [*DEFAULT_TABLES, *FOLLOWER_TABLES]
# the walk with the full-read interval under clock jumps, budget stops and retyped fields; longer, bigger or
# with other features by environment: PIPEDRIVE_WALK_ROUNDS=40 PIPEDRIVE_WALK_SCALE=small
# PIPEDRIVE_WALK_SEED=3 PIPEDRIVE_WALK_FEATURES=interval,budget,retype,hard_delete
FEATURE_ROUNDS = int(os.environ.get("PIPEDRIVE_WALK_ROUNDS", "5"))
FEATURE_SCALE = os.environ.get("PIPEDRIVE_WALK_SCALE", "tiny")
FEATURE_SEED = int(os.environ.get("PIPEDRIVE_WALK_SEED", "321"))
WALK_FEATURES = os.environ.get("PIPEDRIVE_WALK_FEATURES", "interval,budget,retype").split(",")


@pytest.fixture(scope="module")
def walk_emulator() -> Iterator[EmulatorHandle]:
    with secret_emulator() as emulator:
        yield emulator


def test_random_walk_keeps_every_table_equal_to_the_truth(
    walk_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    LEDGER.path(tmp_path)
    walk = ModelWalk(walk_emulator, tmp_path, seed=CI_SEED, tables=CI_TABLES)
    first = walk.start()
    assert not first.problems, first.problems
    assert first.loaded_rows > 0 and first.compared_rows > 0
    for _ in range(CI_ROUNDS):
        done = walk.step()
        assert not done.problems, (done.number, done.ops, done.problems)
    # what the fixed walk is for (the seed is fixed: this is deterministic)
    ops = [op for r in walk.rounds for op in r.ops]
    assert {"merge merge", "pipeline move_deal", "follow follow", "delete_field delete_field"} <= set(ops)
    merged = next(r.number for r in walk.rounds if "merge merge" in r.ops)
    assert any(r.reconcile for r in walk.rounds[merged + 1 :])  # the moved records compared after it


def test_random_walk_with_clock_jumps_budget_stops_and_retyped_fields(tmp_path: Path) -> None:
    """The connector's own full-read interval (lists due by the server's clock must equal the truth, lists
    not due must be left alone), runs stopped by the daily budget (nothing broken, the next run catches up)
    and fields deleted and added again with another type, in one walk on a company of its own."""
    LEDGER.path(tmp_path)
    with secret_emulator(scale=FEATURE_SCALE) as emulator:
        walk = ModelWalk(emulator, tmp_path, seed=FEATURE_SEED, features=WALK_FEATURES)
        first = walk.start()
        assert not first.problems, first.problems
        for _ in range(FEATURE_ROUNDS):
            done = walk.step()
            assert not done.problems, (done.number, done.ops, done.stopped, done.problems)
    if (FEATURE_SEED, FEATURE_ROUNDS) == (321, 5):  # what the fixed walk is for (deterministic)
        later = walk.rounds[1:]
        assert any(r.stopped for r in later) and any(r.unchanged_rows for r in later)
        assert any(r.due and not r.reconcile for r in later)  # a list due by the clock alone
        assert any(op.startswith("retype") for r in later for op in r.ops)
        # a board renamed: the connector reads the phases again before their interval (the model's due)
        assert any(r.due == ["phases"] and "pipeline rename_board" in r.ops for r in later)


def test_relabelled_option_reaches_unchanged_records(walk_emulator: EmulatorHandle, tmp_path: Path) -> None:
    LEDGER.path(tmp_path)
    walk = ModelWalk(walk_emulator, tmp_path, seed=CI_SEED)
    walk.sync()
    field = next(
        f
        for f in walk_emulator.control.snapshot("deal_fields")
        if f.get("is_custom_field") and f["field_type"] == "enum"
    )
    used = [d["custom_fields"].get(field["field_code"]) for d in walk_emulator.control.snapshot("deals")]
    option = max({u for u in used if u is not None}, key=used.count)  # on several deals nobody changes
    op = {"op": "relabel_option", "entity": "deal", "field_code": field["field_code"]}
    walk_emulator.control.mutate(ops=[{**op, "option_id": option, "label": "Relabelled"}])
    walk.sync()
    comparison = compare_with_truth(walk_emulator, tmp_path, ["deals"])
    assert comparison.ok, comparison.summary()


def test_relabelled_built_in_label_reaches_unchanged_records(
    walk_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Deal labels are a built-in set: the readable `labels` column of every deal follows a relabel."""
    LEDGER.path(tmp_path)
    walk = ModelWalk(walk_emulator, tmp_path, seed=CI_SEED)
    walk.sync()
    deals = walk_emulator.control.snapshot("deals")
    option = max({i for d in deals for i in d.get("label_ids") or ()}, key=lambda i: str(i))
    op = {"op": "relabel_option", "entity": "deal", "field_code": "label_ids", "option_id": option}
    walk_emulator.control.mutate(ops=[{**op, "label": "Relabelled label"}])
    walk.sync()
    (field,) = [f for f in walk_emulator.control.snapshot("deal_fields") if f["field_code"] == "label_ids"]
    label = {o["id"]: o["label"] for o in field["options"]}
    want = {d["id"]: sorted(label[i] for i in d.get("label_ids") or ()) for d in deals}
    assert "Relabelled label" in {x for labels in want.values() for x in labels}
    assert synced_labels(tmp_path) == {k: v for k, v in want.items() if v}


def test_only_a_relabel_costs_a_re_read(walk_emulator: EmulatorHandle, tmp_path: Path) -> None:
    """Renamed fields, new options and new fields change no stored value: no re-read. A relabel re-reads
    the entities using the option once (deals and leads, which inherit the deal fields), then no more."""
    LEDGER.path(tmp_path)
    walk = ModelWalk(walk_emulator, tmp_path, seed=CI_SEED)
    walk.sync()
    fd = next(
        f
        for f in walk_emulator.control.snapshot("deal_fields")
        if f.get("is_custom_field") and f["field_type"] == "set"
    )
    code = {"entity": "deal", "field_code": fd["field_code"]}
    rename = {"op": "rename_field", **code, "name": "Renamed set"}
    walk_emulator.control.mutate(ops=[rename, {"op": "add_option", **code, "label": "New"}])
    quiet = walk.sync()
    assert quiet.loaded.get("deals", 0) == 0 and quiet.loaded.get("leads", 0) == 0, quiet.loaded
    relabel = {"op": "relabel_option", **code, "option_id": fd["options"][0]["id"], "label": "Relabelled set"}
    walk_emulator.control.mutate(ops=[relabel])
    reread = walk.sync()
    live_deals = len(walk_emulator.control.snapshot("deals"))
    assert reread.loaded.get("deals", 0) >= live_deals, reread.loaded
    assert reread.loaded.get("persons", 0) == 0, reread.loaded  # another entity's options: no re-read
    again = walk.sync()
    assert again.loaded.get("deals", 0) == 0, again.loaded
    assert compare_with_truth(walk_emulator, tmp_path, ["deals", "leads", "persons"]).ok


def test_new_fields_named_like_built_in_columns(walk_emulator: EmulatorHandle, tmp_path: Path) -> None:
    """Found by the soak: a person field named "id" was bound to the column `id` until a record showed the
    clash, so that run's `custom_fields` named `id` (and the truth built from it lost every person id)."""
    LEDGER.path(tmp_path)
    walk = ModelWalk(walk_emulator, tmp_path, seed=CI_SEED)
    walk.sync()
    names = ("id", "Emails", "Postal address", "Update time", "is_deleted")
    add = {"op": "add_field", "entity": "person", "field_type": "varchar", "fill": 3}
    walk_emulator.control.mutate(ops=[{**add, "name": name} for name in names])
    walk.sync()
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        columns = dict(
            con.execute(
                f"SELECT field_name, column_name FROM {DATASET}.custom_fields WHERE entity = 'persons'"
            ).fetchall()
        )
    taken = {"id", "emails", "postal_address", "update_time", "is_deleted"}
    assert set(names) <= set(columns) and not taken & {columns[n] for n in names}, columns
    assert compare_with_truth(walk_emulator, tmp_path, ["persons"]).ok


def synced_labels(workdir: Path) -> dict[int, list[str]]:
    with duckdb.connect(str(workdir / "crm.duckdb"), read_only=True) as con:
        rows = con.execute(
            f"SELECT d.id, l.value FROM {DATASET}.deals d JOIN {DATASET}.deals__labels l "
            "ON l._dlt_parent_id = d._dlt_id"
        ).fetchall()
    out: dict[int, list[str]] = {}
    for deal, value in rows:
        out.setdefault(deal, []).append(value)
    return {deal: sorted(values) for deal, values in out.items()}


def test_snapshot_hides_variations_of_deleted_products(walk_emulator: EmulatorHandle) -> None:
    variations = walk_emulator.control.snapshot("product_variations")
    product = variations[0]["product_id"]
    walk_emulator.control.mutate(ops=[{"op": "delete", "table": "products", "id": product}])
    answer = httpx.get(
        f"{walk_emulator.base_url}/api/v2/products/{product}/variations",
        headers={"x-api-token": walk_emulator.api_token},
    )
    revealed = [
        v["id"] for v in walk_emulator.control.snapshot("product_variations") if v["product_id"] == product
    ]
    assert answer.status_code == 404  # the API no longer reveals them...
    assert revealed == []  # ...so the ground truth must not list them either


def test_a_run_stopped_before_it_named_a_new_field_is_still_compared(tmp_path: Path) -> None:
    """Found by the soak (`--entities followers --features all`, seed 5, round 31): a run stopped by the
    budget right after a field was added had not named its column yet, and building the truth in the
    named columns raised KeyError, so that round checked nothing (a stopped run must be compared too: not
    behind, but never broken)."""
    LEDGER.path(tmp_path)
    with secret_emulator() as emulator:
        walk = ModelWalk(emulator, tmp_path, seed=CI_SEED)
        walk.sync()
        add = {"op": "add_field", "entity": "person", "field_type": "varchar", "name": "Stopped", "fill": 3}
        emulator.control.mutate(ops=[add])
        emulator.control.reset_ratelimit()
        emulator.control.settings(daily_budget=1)
        stopped = walk.sync()
        assert stopped.monitor.stopped is not None
        comparison = compare_with_truth(emulator, tmp_path, ["persons"], stopped=True)
        assert comparison.rows > 0
