"""Column types come from Pipedrive's spec, not from whichever record came first (`column_types.py`).

A sync of every entity of the emulator's tiny company (Arrow pages and dlt's own record path) must give each
column the DuckDB type the spec's item schema calls for: integer -> BIGINT, number -> DOUBLE, boolean ->
BOOLEAN, timestamps -> TIMESTAMP WITH TIME ZONE, dates -> DATE, other strings -> VARCHAR; no variant column
(`__v_<type>`) anywhere. Then the cases that used to break typing by first value: deals whose first `value`
is whole and later ones a fraction, an integer beyond int64 or 1e20.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from connector_fixtures import ALL_TABLES, DATASET, HIGHEST_BURST, column_types_of, make_pipeline, sync
from dlt.common.schema.utils import get_first_column_name_with_prop, is_nested_table

from pipedrive_source import pipedrive_source
from pipedrive_source.column_types import child_columns, root_columns, table_columns
from pipedrive_source.emulator import EmulatorHandle, run_emulator, spec
from pipedrive_source.entities import BY_NAME, ENTITIES

DUCKDB = {
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
    "text": "VARCHAR",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "date": "DATE",
    "json": "JSON",
}
# what the spec's own types allow (the name decides among several: see column_types.py)
ALLOWED = {
    "integer": {"BIGINT"},
    "number": {"DOUBLE"},
    "boolean": {"BOOLEAN"},
    "string": {"VARCHAR", "TIMESTAMP WITH TIME ZONE", "DATE"},
}
NUMBER_IDS = {"id", "visible_to"}  # the v2 spec types product and variation ids `number`
MONEY_INTEGERS = {("goals", "expected_outcome__target")}


@pytest.fixture(scope="module", params=[True, False], ids=["arrow", "records"])
def synced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp(f"types_{request.param}")
    with run_emulator(seed=7, scale="tiny", **HIGHEST_BURST) as emulator:  # types do not depend on pacing
        sync(emulator, workdir, entities=ALL_TABLES, arrow=request.param)
    db = workdir / "crm.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        custom = con.execute(f"SELECT entity, column_name FROM {DATASET}.custom_fields").fetchall()
    schema = make_pipeline(workdir).default_schema
    return {"arrow": request.param, "types": column_types_of(db), "custom": custom, "schema": schema}


def test_every_entity_table_has_the_spec_types(synced: dict[str, Any]) -> None:
    types = synced["types"]
    wrong = []
    for entity in ENTITIES:
        assert entity.name in types, f"{entity.name} not loaded"
        for column, hint in {**root_columns(entity), **_own(entity)}.items():
            got = types[entity.name].get(column)
            if got != DUCKDB[hint["data_type"]]:
                wrong.append(f"{entity.name}.{column}: {got}, want {DUCKDB[hint['data_type']]}")
    assert not wrong, "\n".join(wrong)


def test_child_tables_have_the_spec_types(synced: dict[str, Any]) -> None:
    types = synced["types"]
    wrong = []
    for entity in ENTITIES:
        for child, columns in child_columns(entity.name).items():
            if child not in types:
                continue  # no record had such a list: dlt creates a child table with its first row
            for column, hint in columns.items():
                got = types.get(child, {}).get(column)
                if got != DUCKDB[hint["data_type"]]:
                    wrong.append(f"{child}.{column}: {got}, want {DUCKDB[hint['data_type']]}")
    assert not wrong, "\n".join(wrong)


def test_the_types_follow_the_spec(synced: dict[str, Any]) -> None:
    """Independently of the hints: every scalar property of every list's item schema, as loaded."""
    types = synced["types"]
    wrong = []
    for table, column, kind in _spec_scalars():
        if "__" in table and (not synced["arrow"] or table not in types):
            continue  # child tables of the record path: see test_child_tables_have_the_spec_types
        got = types.get(table, {}).get(column)
        allowed = ALLOWED[kind]
        if kind == "number" and (column in NUMBER_IDS or column.endswith("_id")):
            allowed = {"BIGINT"}
        if (table, column) in MONEY_INTEGERS:
            allowed = {"DOUBLE"}
        if got not in allowed:
            wrong.append(f"{table}.{column} ({kind}): {got}, want one of {sorted(allowed)}")
    assert not wrong, "\n".join(wrong)


def test_timestamps_and_dates_by_their_names(synced: dict[str, Any]) -> None:
    """Pipedrive's timestamps (`*_time`, v1 `created`/`modified`) are typed; times of day, durations not."""
    deals, activities, users = (synced["types"][t] for t in ("deals", "activities", "users"))
    for column in ("add_time", "update_time", "won_time", "lost_time", "close_time", "stage_change_time"):
        assert deals[column] == "TIMESTAMP WITH TIME ZONE", column
    assert deals["expected_close_date"] == "DATE"
    assert activities["due_date"] == "DATE"
    assert activities["due_time"] == "VARCHAR" and activities["duration"] == "VARCHAR"
    assert users["created"] == users["modified"] == users["last_login"] == "TIMESTAMP WITH TIME ZONE"
    assert synced["types"]["call_logs"]["start_time"] == "TIMESTAMP WITH TIME ZONE"  # `.000Z`
    # a participant's person: the derived spec knows these only from an example's null (they were JSON)
    participant = synced["types"]["deal_participants"]
    assert participant["person__last_incoming_mail_time"] == "TIMESTAMP WITH TIME ZONE"
    assert participant["person__last_outgoing_mail_time"] == "TIMESTAMP WITH TIME ZONE"
    assert participant["person__next_activity_time"] == participant["next_activity_time"] == "VARCHAR"


def test_money_is_double_and_ids_are_bigint(synced: dict[str, Any]) -> None:
    types = synced["types"]
    for table, column in (
        ("deals", "value"),
        ("deal_products", "item_price"),
        ("deal_products", "sum"),
        ("deal_installments", "amount"),
        ("leads", "value__amount"),
        ("products", "tax"),
    ):
        assert types[table][column] == "DOUBLE", (table, column)
    for table, column in (("products", "id"), ("product_variations", "id"), ("deals", "org_id")):
        assert types[table][column] == "BIGINT", (table, column)
    if synced["arrow"]:
        assert types["products__prices"]["price"] == types["products__prices"]["direct_cost"] == "DOUBLE"


def test_no_variant_columns(synced: dict[str, Any]) -> None:
    variants = [f"{t}.{c}" for t, cols in synced["types"].items() for c in cols if "__v_" in c]
    assert not variants


def test_no_table_has_a_parent_key_without_a_parent(synced: dict[str, Any]) -> None:
    """The connector's child tables are top-level tables. A child table whose first page went through dlt's
    record path (a value that did not fit its column) got dlt's default nested-table hints, `parent_key` on
    `_dlt_parent_id` among them, and dlt then warned in every run that such a table is not linked to a
    parent (`Table lead_fields__options has parent_key ...`)."""
    schema = synced["schema"]
    orphans = [
        table["name"]
        for table in schema.data_tables()
        if get_first_column_name_with_prop(table, "parent_key") and not is_nested_table(table)
    ]
    assert not orphans


def test_hints_name_the_columns_dlt_makes(synced: dict[str, Any]) -> None:
    """Flattened objects and child tables: a hint under a name dlt does not produce would add a column that
    stays empty next to the real one; every hinted column that got a value in the sync exists under it."""
    types = synced["types"]
    assert types["persons"]["postal_address__locality"] == "VARCHAR"
    assert types["leads"]["value__amount"] == "DOUBLE"
    assert types["deals__label_ids"]["value"] == "BIGINT"
    assert types["persons__emails"]["primary"] == "BOOLEAN"
    assert table_columns("persons__emails") == child_columns("persons")["persons__emails"]
    for table, columns in types.items():
        for column in columns:
            assert not column.endswith("_"), f"{table}.{column}"  # dlt's mark of a clash of names


def test_custom_field_columns_never_take_a_spec_column(synced: dict[str, Any]) -> None:
    """Custom fields are typed by their own hints (custom_fields.py); none is bound to a built-in column."""
    assert synced["custom"]
    for entity, column in synced["custom"]:
        assert column not in root_columns(BY_NAME[entity]), (entity, column)
        # a column, or a child table for a set field (its values are a list)
        assert column in synced["types"][entity] or f"{entity}__{column}" in synced["types"], (entity, column)


# ---- numbers whose first value is whole ------------------------------------------------------------------


@pytest.fixture
def company() -> Iterator[EmulatorHandle]:
    with run_emulator(seed=7, scale="tiny") as emulator:
        yield emulator


HUGE_INT = 2**63 + 2048  # beyond int64, exactly representable as a double
WHOLE_FIRST = [
    {"op": "update", "table": "deals", "id": 1, "changes": {"value": 100, "update_time": 1000}},
    {"op": "update", "table": "deals", "id": 2, "changes": {"value": 99.5}},
    {"op": "update", "table": "deals", "id": 3, "changes": {"value": HUGE_INT}},
    {"op": "update", "table": "deals", "id": 4, "changes": {"value": 1e20}},
]


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "records"])
def test_a_whole_value_first_then_fractions_and_huge_values_load_as_double(
    company: EmulatorHandle, tmp_path: Path, arrow: bool
) -> None:
    company.control.mutate(ops=WHOLE_FIRST)
    first = company.control.snapshot("deals")
    assert min(first, key=lambda r: r["update_time"])["id"] == 1  # the whole value comes first
    # small pages: the whole value's page is typed before the others are read
    sync(company, tmp_path, entities=["deals"], page_size=5, arrow=arrow, full_read_interval_hours=0)
    types = column_types_of(tmp_path / "crm.duckdb")["deals"]
    assert types["value"] == "DOUBLE"
    assert not [c for c in types if c.startswith("value__v_")]
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        values = dict(con.execute(f"SELECT id, value FROM {DATASET}.deals WHERE id <= 4").fetchall())
    assert values == {1: 100.0, 2: 99.5, 3: float(HUGE_INT), 4: 1e20}


# ---- datasets typed before the spec types ------------------------------------------------------------------


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "records"])
def test_a_column_typed_bigint_by_an_older_load_keeps_its_type_without_losing_fractions(
    company: EmulatorHandle, tmp_path: Path, arrow: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """dlt retypes a column in its schema when a hint says so, not in the destination, which then casts
    (99.5 would load as 100): an existing column keeps its type, a fraction goes to dlt's variant column."""
    pipeline = make_pipeline(tmp_path)
    old = dlt.resource([{"id": 10**9, "value": 100}], name="deals", primary_key="id")
    pipeline.run(old, schema=dlt.Schema("pipedrive"), write_disposition="merge")  # typed by inference
    company.control.mutate(ops=[{"op": "update", "table": "deals", "id": 2, "changes": {"value": 99.5}}])
    sync(company, tmp_path, pipeline=pipeline, entities=["deals"], arrow=arrow)
    types = column_types_of(tmp_path / "crm.duckdb")["deals"]
    assert types["value"] == "BIGINT" and types["value__v_double"] == "DOUBLE"
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        row = con.execute(f"SELECT value, value__v_double FROM {DATASET}.deals WHERE id = 2").fetchone()
    assert row == (None, 99.5)
    assert "value bigint keep the type they have in the destination" in caplog.text
    if arrow:  # a full refresh retypes (dlt's record path keeps the hints the source was built with)
        source = pipedrive_source(api_token=company.api_token, base_url=company.base_url, entities=["deals"])
        pipeline.run(source, loader_file_format="parquet", refresh="drop_sources")
        assert column_types_of(tmp_path / "crm.duckdb")["deals"]["value"] == "DOUBLE"


# ---- helpers -----------------------------------------------------------------------------------------------


def _own(entity: Any) -> dict[str, Any]:
    """The entity's own hints that carry a type (they win over the spec's)."""
    return {name: hint for name, hint in entity.columns.items() if hint.get("data_type")}


def _spec_scalars() -> Iterator[tuple[str, str, str]]:
    """(table, column, spec type) of every scalar property, flattened the way dlt names the columns."""
    for entity in ENTITIES:
        for name, node in _item_properties(entity).items():
            kind = node.get("type")
            if kind == "object":
                for inner, inner_node in (node.get("properties") or {}).items():
                    if inner_node.get("type") in ALLOWED:
                        yield entity.name, f"{name}__{inner}", inner_node["type"]
            elif kind == "array":
                items = node.get("items") or {}
                if items.get("type") in ALLOWED:
                    yield f"{entity.name}__{name}", "value", items["type"]
                for inner, inner_node in (items.get("properties") or {}).items():
                    if inner_node.get("type") in ALLOWED:
                        yield f"{entity.name}__{name}", inner, inner_node["type"]
            elif kind in ALLOWED and name not in BY_NAME[entity.name].columns:
                yield entity.name, name, kind


def _item_properties(entity: Any) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for listing in entity.listings:
        op = spec.operation(entity.api, "GET", listing.path)
        found = (op.item_properties if op else None) or {}
        if entity.items_key:
            found = found[entity.items_key]["items"]["properties"]
        for key, node in found.items():
            props.setdefault(key, node)
    return props
