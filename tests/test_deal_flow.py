"""`deal_flow` holds every kind of item of a deal's flow: field changes and the deal's activities, notes,
files and mail messages, whose `data` differ in keys and types (the spec's GetDealUpdates example).

The rows are checked against what the emulator serves, item by item, not against a ground truth loaded
through dlt (which would share the connector's flattening): every kind lands in the same typed columns,
a field change's fields in `data__*`, any other kind's `data` whole in `item_data`. A custom field's change
(served with `all_changes=1` only) keeps its hash in `data__field_key`, names its `deals` column in
`data__column_name` and has option labels for ids, as `deals` has them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from connector_fixtures import DATASET, assert_equal_to_truth, custom_columns, sync, synced_rows
from custom_field_expectations import custom_definitions, flow_change

from pipedrive_source.deal_flow import COLUMNS, flow_row
from pipedrive_source.emulator import EmulatorHandle

TABLES = ["deals", "deal_flow"]
DLT_COLUMNS = {"_dlt_id", "_dlt_load_id", "is_deleted"}
TYPES = {"text": "VARCHAR", "bigint": "BIGINT", "bool": "BOOLEAN", "json": "JSON"}
TYPES["timestamp"] = "TIMESTAMP WITH TIME ZONE"
Naming = tuple[dict[str, dict[str, Any]], dict[str, str]]  # deal custom fields: definitions, columns


def column_types(workdir: Path) -> dict[str, str]:
    with duckdb.connect(str(workdir / "crm.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = 'deal_flow'",
            [DATASET],
        ).fetchall()
    return dict(rows)


def flow_rows(workdir: Path) -> dict[str, dict[str, Any]]:
    with duckdb.connect(str(workdir / "crm.duckdb"), read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM {DATASET}.deal_flow")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return {row["flow_id"]: row for row in rows}


def naming(emulator: EmulatorHandle, workdir: Path) -> Naming:
    """The deal custom fields' definitions as the emulator lists them, and their columns as the loaded
    `custom_fields` table names them."""
    return custom_definitions(emulator.control.snapshot, "deals"), custom_columns(
        workdir / "crm.duckdb", "deals"
    )


def served(emulator: EmulatorHandle) -> dict[str, dict[str, Any]]:
    """Every flow item the emulator serves, by flow id, with its deal."""
    items = emulator.control.snapshot("deal_flow")
    return {f"{item['object']}:{item['data']['id']}": item for item in items}


def v1_time(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def text(value: Any) -> str | None:
    return None if value is None else str(value)


def change_values(data: dict[str, Any], names: Naming) -> dict[str, Any]:
    """The columns a field change's key and values should land in (`flow_change`)."""
    return {f"data__{key}": value for key, value in flow_change(data, *names).items()}


def problems(
    rows: dict[str, dict[str, Any]], items: dict[str, dict[str, Any]], names: Naming | None = None
) -> list[str]:
    """Differences between the destination's rows and the items the emulator serves."""
    out = [f"{key}: missing" for key in sorted(items.keys() - rows.keys())]
    out += [f"{key}: not served" for key in sorted(rows.keys() - items.keys()) if not rows[key]["is_deleted"]]
    for key in sorted(items.keys() & rows.keys()):
        item, row = items[key], rows[key]
        data = item["data"]
        want = {
            "deal_id": item["deal_id"],
            "object": item["object"],
            "timestamp": v1_time(item["timestamp"]),
            "data__id": data["id"],
            "data__user_id": data.get("user_id"),
        }
        if item["object"] == "dealChange":
            want |= {
                "data__field_key": data["field_key"],
                **change_values(data, names or ({}, {})),
                "data__log_time": v1_time(data["log_time"]),
                "item_data": None,
            }
        else:
            stored = row["item_data"]
            want["item_data"] = data
            row = {**row, "item_data": None if stored is None else json.loads(stored)}
        out += [f"{key}.{c}: got {row.get(c)!r}, want {v!r}" for c, v in want.items() if row.get(c) != v]
    return out


@pytest.mark.parametrize("arrow", [True, False])  # the Arrow path, and dlt's own records path
def test_every_kind_of_flow_item_lands_in_the_same_typed_columns(
    emulator: EmulatorHandle, tmp_path: Path, arrow: bool
) -> None:
    """Flattened as they came, the kinds made 122 columns here (one per key of every kind), typed by the
    first value seen: an undone activity's `marked_as_done_time` "" split into a `__v_text` variant column
    next to a done one's timestamp (with another company's data, the column was text)."""
    items = served(emulator)
    kinds = {item["object"] for item in items.values()}
    assert {"dealChange", "activity", "mailMessage", "note", "file"} <= kinds
    ids: dict[Any, set[str]] = {}
    for item in items.values():
        ids.setdefault(item["data"]["id"], set()).add(item["object"])
    assert any(len(objects) > 1 for objects in ids.values()), "kinds share ids: the key must tell them apart"

    sync(emulator, tmp_path, entities=TABLES, arrow=arrow)

    types = column_types(tmp_path)
    assert types.keys() - DLT_COLUMNS == COLUMNS.keys()
    assert {c: types[c] for c in COLUMNS} == {c: TYPES[hint["data_type"]] for c, hint in COLUMNS.items()}
    assert not problems(flow_rows(tmp_path), items, naming(emulator, tmp_path))


def test_a_new_activity_and_mail_on_a_deal_arrive_with_the_next_run(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    pipeline = sync(emulator, tmp_path, entities=TABLES).pipeline
    deal_id = min(item["deal_id"] for item in served(emulator).values())
    before = set(served(emulator))
    emulator.control.mutate(
        ops=[
            {"op": "create", "table": "activities", "values": {"deal_id": deal_id}},
            {"op": "add_mail", "deal_id": deal_id},
        ]
    )
    items = served(emulator)
    new = items.keys() - before
    assert {key.split(":")[0] for key in new} == {"activity", "mailMessage"}
    assert all(items[key]["deal_id"] == deal_id for key in new)

    result = sync(emulator, tmp_path, entities=TABLES, pipeline=pipeline)

    assert result.loaded["deals"] == 1  # only that deal changed (its counts), and its flow was read again
    rows = flow_rows(tmp_path)
    assert new <= rows.keys()
    assert not problems(rows, items, naming(emulator, tmp_path))


def custom_field_per_type(emulator: EmulatorHandle) -> dict[str, dict[str, Any]]:
    """The first custom deal field of each field type the emulator's company has."""
    fields: dict[str, dict[str, Any]] = {}
    for fd in emulator.control.snapshot("deal_fields"):
        if fd.get("is_custom_field"):
            fields.setdefault(fd["field_type"], fd)
    return fields


def test_a_custom_field_change_arrives_with_the_next_run_named_as_in_deals(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Pipedrive lists a deal's custom field changes only when asked (`all_changes=1`); never asked, the
    connector left them all out. They arrive with the same requests, under the field's hash and its deals
    column, an option field's ids as the labels `deals` shows."""
    pipeline = sync(emulator, tmp_path, entities=TABLES).pipeline
    deal_id = min(item["deal_id"] for item in served(emulator).values())
    fields = custom_field_per_type(emulator)
    enum, choices, money = fields["enum"], fields["set"], fields["monetary"]
    new_values = {
        fields["varchar"]["field_code"]: "a custom change",
        enum["field_code"]: enum["options"][-1]["id"],
        choices["field_code"]: [choices["options"][0]["id"], choices["options"][-1]["id"]],
        money["field_code"]: {"value": 4321.5, "currency": "JPY"},
    }
    before = set(served(emulator))
    emulator.control.mutate(
        ops=[{"op": "update", "table": "deals", "id": deal_id, "changes": {"custom_fields": new_values}}]
    )
    items = served(emulator)
    new = {key: items[key]["data"] for key in items.keys() - before}
    keys = {data["field_key"] for data in new.values()}
    assert {key[:40] for key in keys} == new_values.keys() and money["field_code"] + "_currency" in keys

    result = sync(emulator, tmp_path, entities=TABLES, pipeline=pipeline)

    assert result.loaded["deals"] == 1
    assert result.emulator_stats["requests"]["/v1/deals/{id}/flow"] == 1  # the same requests as without
    rows = flow_rows(tmp_path)
    names = naming(emulator, tmp_path)
    assert not problems(rows, items, names)
    deal = next(row for row in synced_rows(pipeline, "deals") if row["id"] == deal_id)
    for key, data in new.items():  # the new value is what the named deals column holds now
        column, value = rows[key]["data__column_name"], rows[key]["data__new_value"]
        if data["field_key"] != choices["field_code"]:  # a set's labels are a child table of deals
            assert text(deal[column]) == value, (column, deal[column], value)
    labelled = {data["field_key"]: rows[key]["data__new_value"] for key, data in new.items()}
    assert labelled[enum["field_code"]] == enum["options"][-1]["label"]
    assert (
        labelled[choices["field_code"]]
        == f"{choices['options'][0]['label']}, {choices['options'][-1]['label']}"
    )


def test_deal_flow_equals_the_truth_after_custom_field_changes(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """The ground truth (`load_truth`) names a custom field change's `deals` column and labels its options
    as `deal_flow` does, so the whole table compares row by row: after a field renamed (its column stays),
    an option relabelled (every deal, so every flow, is read again: the new label everywhere) and new
    custom values, one of them on an option added since the first run."""
    pipeline = sync(emulator, tmp_path, entities=TABLES).pipeline
    deal_id = max(item["deal_id"] for item in served(emulator).values())
    fields = custom_field_per_type(emulator)
    enum, choices = fields["enum"], fields["set"]
    changed = emulator.control.mutate(
        ops=[
            {"op": "rename_field", "entity": "deal", "field_code": enum["field_code"], "name": "Renamed"},
            {
                "op": "relabel_option",
                "entity": "deal",
                "field_code": choices["field_code"],
                "option_id": choices["options"][0]["id"],
                "label": "Relabelled",
            },
            {"op": "add_option", "entity": "deal", "field_code": enum["field_code"], "label": "Brand new"},
        ]
    )
    added = changed["fields"][-1]["option_id"]
    new_values = {enum["field_code"]: added, choices["field_code"]: [choices["options"][0]["id"]]}
    emulator.control.mutate(
        ops=[{"op": "update", "table": "deals", "id": deal_id, "changes": {"custom_fields": new_values}}]
    )

    sync(emulator, tmp_path, entities=TABLES, pipeline=pipeline)

    assert_equal_to_truth(emulator, tmp_path, TABLES)
    rows = [r for r in synced_rows(pipeline, "deal_flow") if r["deal_id"] == deal_id]
    labels = {r["data__field_key"]: r["data__new_value"] for r in rows if r["object"] == "dealChange"}
    assert labels[enum["field_code"]] == "Brand new" and labels[choices["field_code"]] == "Relabelled"


def test_flow_items_without_an_id_keep_a_row_each() -> None:
    """Kinds are open-ended and an item without `data.id` got flow_id '<kind>:None': two of them in one deal
    were one row (the last kept). Such an item is keyed by its content: distinct items stay distinct, the
    same item read again keeps its key; items with an id keep '<kind>:<id>'."""
    items = [
        {"object": "marketing_status_change", "timestamp": "2026-01-02 10:00:00", "data": {"status": "a"}},
        {"object": "marketing_status_change", "timestamp": "2026-01-03 10:00:00", "data": {"status": "b"}},
        {"object": "note", "timestamp": "2026-01-04 10:00:00", "data": {"id": 7, "content": "x"}},
    ]
    keys = []
    for item in items:
        row = json.loads(json.dumps(item))
        flow_row(row, 1)
        again = json.loads(json.dumps(item))
        flow_row(again, 1)
        assert again["flow_id"] == row["flow_id"]
        keys.append(row["flow_id"])
    assert len(set(keys)) == 3
    assert keys[0].startswith("marketing_status_change:#") and keys[2] == "note:7"
