"""Custom fields end to end: the emulator's field zoo synced through the connector into DuckDB.

The expectations are computed here from the emulator's own ground truth (`/_emulator/snapshot`) and the
field definitions, independently of the resolver: enum -> option label, set -> labels in a child table,
monetary -> value + currency, ranges -> start + until, address -> formatted + parts, typed dates/times.
Mutations go through `POST /_emulator/mutate`; the module's emulator is fresh (module-scoped fixture), and
the tests run in file order: first sync, checks, then mutations and a second sync.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from custom_field_expectations import expected_columns, label

from pipedrive_source import pipedrive_source
from pipedrive_source.custom_fields_hook import STATE_KEY
from pipedrive_source.emulator import EmulatorHandle, run_emulator

HEX40 = re.compile(r"[0-9a-f]{40}")
ENTITIES = ["deals", "persons", "organizations", "products", "projects", "leads"]
FIELDS_OF = {
    "deals": "deal_fields",
    "persons": "person_fields",
    "organizations": "organization_fields",
    "products": "product_fields",
    "projects": "project_fields",
    "leads": "deal_fields",
}
DATASET = "pipedrive"


class Sync:
    """One pipeline (one DuckDB file) synced repeatedly, with the hook's run context captured."""

    def __init__(
        self,
        emulator: EmulatorHandle,
        workdir: Path,
        entities: list[str] = ENTITIES,
        keep_option_ids: bool = False,
        destination: Any = None,
    ) -> None:
        self.db_path = workdir / "custom_fields.duckdb"
        self.on_duckdb = destination is None  # else queried through dlt's SQL client
        self.pipeline = dlt.pipeline(
            pipeline_name="custom_fields_sync",
            pipelines_dir=str(workdir / "pipelines"),
            destination=destination or dlt.destinations.duckdb(str(self.db_path)),
            dataset_name=DATASET,
        )
        self.loader_file_format = "parquet"
        self.source_args: dict[str, Any] = {
            "api_token": emulator.api_token,
            "base_url": emulator.base_url,
            "entities": entities,
        }
        if keep_option_ids:
            self.source_args["keep_option_ids"] = True

    def run(self) -> None:
        self.pipeline.run(pipedrive_source(**self.source_args), loader_file_format=self.loader_file_format)

    def query(self, sql: str) -> list[dict[str, Any]]:
        if not self.on_duckdb:
            with self.pipeline.sql_client() as client, client.execute_query(sql) as cur:
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        with duckdb.connect(str(self.db_path), read_only=True) as con:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def table(self, name: str) -> dict[Any, dict[str, Any]]:
        return {row["id"]: row for row in self.query(f"SELECT * FROM {DATASET}.{name}")}

    def children(self, table: str, column: str) -> dict[Any, list[Any]]:
        """A list column's child table, as {parent id: [values in order]}."""
        rows = self.query(
            f"SELECT p.id AS id, c.value AS value FROM {DATASET}.{table}__{column} c "
            f"JOIN {DATASET}.{table} p ON c._dlt_parent_id = p._dlt_id ORDER BY p.id, c._dlt_list_idx"
        )
        out: dict[Any, list[Any]] = {}
        for row in rows:
            out.setdefault(row["id"], []).append(row["value"])
        return out

    def columns(self) -> dict[str, dict[str, str]]:
        rows = self.query(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = '{DATASET}'"
        )
        out: dict[str, dict[str, str]] = {}
        for row in rows:
            out.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
        return out

    def bindings(self) -> dict[str, dict[str, str]]:
        return self.pipeline.state["sources"]["pipedrive"][STATE_KEY]


@pytest.fixture(scope="module")
def sync(emulator: EmulatorHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sync]:
    s = Sync(emulator, tmp_path_factory.mktemp("custom_fields_sync"))
    s.run()
    yield s


def custom_defs(emulator: EmulatorHandle, entity: str) -> dict[str, dict[str, Any]]:
    return {f["field_code"]: f for f in emulator.control.snapshot(FIELDS_OF[entity]) if f["is_custom_field"]}


def column_of(sync: Sync, entity: str) -> dict[str, str]:
    rows = sync.query(
        f"SELECT field_code, column_name FROM {DATASET}.custom_fields WHERE entity = '{entity}'"
    )
    return {r["field_code"]: r["column_name"] for r in rows}


# --- first sync -------------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ["deals", "persons", "organizations", "products", "projects"])
def test_every_field_type_lands_in_its_columns(sync: Sync, emulator: EmulatorHandle, entity: str) -> None:
    defs = custom_defs(emulator, entity)
    columns = column_of(sync, entity)
    warehouse = sync.table(entity)
    truth = {r["id"]: r for r in emulator.control.snapshot(entity) if r["id"] in warehouse}
    assert truth and set(columns) == set(defs)
    seen_types: set[str] = set()
    for code, fd in defs.items():
        col = columns[code]
        lists = sync.children(entity, col) if fd["field_type"] == "set" else {}
        for rid, record in truth.items():
            value = record["custom_fields"].get(code)
            if value is not None:
                seen_types.add(fd["field_type"])
            if fd["field_type"] == "set":
                assert lists.get(rid, []) == [label(fd, i) for i in value or ()], (entity, col, rid)
                continue
            for column, expected in expected_columns(fd, col, value).items():
                got = warehouse[rid].get(column)
                assert got == expected, (entity, column, rid)
                assert expected is None or type(got) is type(expected), (entity, column, type(got))
    assert seen_types == {fd["field_type"] for fd in defs.values()}  # every type really had values


def test_column_types_in_duckdb(sync: Sync, emulator: EmulatorHandle) -> None:
    defs = custom_defs(emulator, "deals")
    columns = column_of(sync, "deals")
    types = sync.columns()["deals"]
    want = {
        "date": "DATE",
        "time": "TIME",
        "double": "DOUBLE",
        "int": "BIGINT",
        "boolean": "BOOLEAN",
        "enum": "VARCHAR",
        "varchar": "VARCHAR",
        "monetary": "DOUBLE",
        "daterange": "DATE",
        "user": "BIGINT",
        "org": "BIGINT",
        "people": "BIGINT",
    }
    for code, fd in defs.items():
        if fd["field_type"] in want:
            assert types[columns[code]] == want[fd["field_type"]], fd["field_name"]


def test_nasty_names_and_collisions(sync: Sync, emulator: EmulatorHandle) -> None:
    defs = custom_defs(emulator, "deals")
    columns = column_of(sync, "deals")
    by_name: dict[str, list[str]] = {}
    for code, fd in sorted(defs.items()):
        by_name.setdefault(fd["field_name"], []).append(code)
    assert columns[by_name["Status"][0]] == "status_cf"
    assert columns[by_name["Value"][0]] == "value_cf"
    assert columns[by_name["Região de venda"][0]] == "regiao_de_venda"
    assert columns[by_name["Deal Tier"][0]] == "deal_tier"
    first, second = by_name["Region"]  # sorted by hash: the lower hash keeps the plain name
    assert (columns[first], columns[second]) == ("region", "region_2")
    deals = sync.table("deals")
    truth = {r["id"]: r for r in emulator.control.snapshot("deals") if r["id"] in deals}
    for rid, record in truth.items():  # built-ins untouched by same-named custom fields
        assert deals[rid]["status"] == record["status"]
        assert deals[rid]["value"] == record["value"]


def test_no_column_or_table_is_named_after_a_hash(sync: Sync) -> None:
    for table, cols in sync.columns().items():
        assert not HEX40.search(table), table
        hashed = [c for c in cols if HEX40.search(c)]
        assert not hashed, (table, hashed)


def test_builtin_option_fields_get_labels(sync: Sync, emulator: EmulatorHandle) -> None:
    fields = {f["field_code"]: f for f in emulator.control.snapshot("deal_fields")}
    deals = sync.table("deals")
    labels = sync.children("deals", "labels")
    for record in emulator.control.snapshot("deals"):
        if record["id"] not in deals:
            continue
        assert labels.get(record["id"], []) == [label(fields["label_ids"], i) for i in record["label_ids"]]
        assert deals[record["id"]]["visible_to_label"] == label(fields["visible_to"], record["visible_to"])
    names = {lab["id"]: lab["name"] for lab in emulator.control.snapshot("lead_labels")}
    lead_labels = sync.children("leads", "labels")
    leads = sync.table("leads")
    checked = 0
    for lead in emulator.control.snapshot("leads"):  # leads: UUID label ids named through lead labels
        if lead["id"] in leads and lead["label_ids"]:
            assert lead_labels[lead["id"]] == [names[i] for i in lead["label_ids"]]
            checked += 1
    assert checked


def test_v1_comma_string_sets_and_v2_arrays_resolve_to_the_same_labels(
    sync: Sync, emulator: EmulatorHandle
) -> None:
    defs = custom_defs(emulator, "deals")
    lead_columns, deal_columns = column_of(sync, "leads"), column_of(sync, "deals")
    assert set(lead_columns) == set(deal_columns)  # leads inherit the deal fields
    set_fields = [code for code, fd in defs.items() if fd["field_type"] == "set"]
    leads_truth = emulator.control.snapshot("leads")
    deals_truth = emulator.control.snapshot("deals")
    checked = 0
    for code in set_fields:
        fd = defs[code]
        lead_lists = sync.children("leads", lead_columns[code])
        deal_lists = sync.children("deals", deal_columns[code])
        for lead in leads_truth:
            raw = lead.get(code)
            if raw:
                assert isinstance(raw, str)  # v1: "11,12"
                assert lead_lists[lead["id"]] == [label(fd, i) for i in raw.split(",")]
                checked += 1
        by_ids = {
            tuple(d["custom_fields"][code]): deal_lists[d["id"]]
            for d in deals_truth
            if d["custom_fields"].get(code) and d["id"] in deal_lists
        }
        for lead in leads_truth:  # the same ids, one as a comma string, one as an array
            raw = lead.get(code)
            key = tuple(int(i) for i in raw.split(",")) if raw else None
            if key in by_ids:
                assert lead_lists[lead["id"]] == by_ids[key]
    assert checked


def test_custom_fields_table_describes_every_field(sync: Sync, emulator: EmulatorHandle) -> None:
    rows = sync.query(f"SELECT * FROM {DATASET}.custom_fields WHERE entity = 'deals'")
    defs = custom_defs(emulator, "deals")
    assert {r["field_code"] for r in rows} == set(defs)
    for r in rows:
        assert r["field_name"] == defs[r["field_code"]]["field_name"]
        assert r["field_type"] == defs[r["field_code"]]["field_type"]
        assert r["still_exists"] is True
    # what `columns` names is there: a column of deals, or a set's child table (it has no column)
    tables = sync.columns()
    for r in rows:
        listed = r["columns"].split(", ")
        if r["field_type"] == "set":
            assert listed == [f"deals__{r['column_name']}"], r
            assert listed[0] in tables
        else:
            assert set(listed) <= set(tables["deals"]), r
    options = sync.query(f"SELECT * FROM {DATASET}.custom_field_options WHERE entity = 'deals'")
    expected = {(code, o["id"], o["label"]) for code, fd in defs.items() for o in fd["options"] or ()}
    assert expected <= {(o["field_code"], o["option_id"], o["label"]) for o in options}


# --- mutations, then a second sync ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mutated(sync: Sync, emulator: EmulatorHandle) -> dict[str, Any]:
    """Rename, relabel, add an option (and use it), delete a field, add colliding fields; sync again."""
    defs = custom_defs(emulator, "deals")
    by_name = {fd["field_name"]: code for code, fd in sorted(defs.items(), reverse=True)}
    before = {
        "columns": set(sync.columns()["deals"]),
        "bindings": dict(sync.bindings()["deals"]),
    }
    tier, text, legacy = by_name["Deal Tier"], by_name["Text field"], by_name["Varchar field"]
    relabelled = defs[tier]["options"][0]
    deal_id = sorted(sync.table("deals"))[0]
    result = emulator.control.mutate(
        ops=[
            {"op": "rename_field", "entity": "deal", "field_code": text, "name": "Customer notes"},
            {
                "op": "relabel_option",
                "entity": "deal",
                "field_code": tier,
                "option_id": relabelled["id"],
                "label": "Tier One",
            },
            {"op": "add_option", "entity": "deal", "field_code": tier, "label": "Tier Zero"},
            {"op": "delete_field", "entity": "deal", "field_code": legacy},
            {"op": "add_field", "entity": "deal", "name": "Title", "field_type": "varchar", "fill": 5},
            {
                "op": "add_field",
                "entity": "deal",
                "name": "Deal Tier",
                "field_type": "enum",
                "options": ["A", "B"],
                "fill": 5,
            },
            {
                "op": "add_field",
                "entity": "deal",
                "name": "Renewal date",
                "field_type": "date",
            },  # no values yet
        ]
    )
    new_option = next(f["option_id"] for f in result["fields"] if f["op"] == "add_option")
    emulator.control.mutate(
        ops=[
            {
                "op": "update",
                "table": "deals",
                "id": deal_id,
                "changes": {"custom_fields": {tier: new_option}},
            }
        ]
    )
    sync.run()
    return {
        **before,
        "tier": tier,
        "text": text,
        "legacy": legacy,
        "relabelled": relabelled["id"],
        "new_option": new_option,
        "deal_id": deal_id,
        "result": result,
    }


def test_columns_stay_stable_after_rename_and_delete(sync: Sync, mutated: dict[str, Any]) -> None:
    after = sync.bindings()["deals"]
    for code, column in mutated["bindings"].items():
        assert after[code] == column  # renamed and deleted fields keep their column
    assert mutated["columns"] <= set(sync.columns()["deals"])  # no column vanished or moved


def test_custom_fields_table_shows_the_changes(sync: Sync, mutated: dict[str, Any]) -> None:
    rows = {
        r["field_code"]: r
        for r in sync.query(f"SELECT * FROM {DATASET}.custom_fields WHERE entity = 'deals'")
    }
    assert rows[mutated["text"]]["field_name"] == "Customer notes"
    assert rows[mutated["text"]]["column_name"] == "text_field"
    assert rows[mutated["legacy"]]["still_exists"] is False
    assert rows[mutated["legacy"]]["column_name"] == "varchar_field"
    # what the deleted field was, as last listed (was NULL: nothing said what the column had held)
    assert (rows[mutated["legacy"]]["field_name"], rows[mutated["legacy"]]["field_type"]) == (
        "Varchar field",
        "varchar",
    )
    options = {
        (o["field_code"], o["option_id"]): o["label"]
        for o in sync.query(f"SELECT * FROM {DATASET}.custom_field_options WHERE entity = 'deals'")
    }
    assert options[(mutated["tier"], mutated["relabelled"])] == "Tier One"
    assert options[(mutated["tier"], mutated["new_option"])] == "Tier Zero"


def test_new_option_label_lands(sync: Sync, mutated: dict[str, Any]) -> None:
    assert sync.table("deals")[mutated["deal_id"]]["deal_tier"] == "Tier Zero"


def test_colliding_new_fields_get_suffixes_and_builtins_survive(
    sync: Sync, emulator: EmulatorHandle, mutated: dict[str, Any]
) -> None:
    added = {f["name"]: f["field_code"] for f in mutated["result"]["fields"] if f["op"] == "add_field"}
    after = sync.bindings()["deals"]
    assert after[added["Title"]] == "title_cf"
    assert after[added["Deal Tier"]] == "deal_tier_2"
    deals = sync.table("deals")
    truth = {r["id"]: r for r in emulator.control.snapshot("deals") if r["id"] in deals}
    filled = [r for r in truth.values() if r["custom_fields"].get(added["Title"]) is not None]
    assert filled
    for record in filled:
        assert deals[record["id"]]["title"] == record["title"]
        assert deals[record["id"]]["title_cf"] == record["custom_fields"][added["Title"]]


def test_field_without_values_still_gets_its_typed_column(sync: Sync, mutated: dict[str, Any]) -> None:
    assert sync.columns()["deals"].get("renewal_date") == "DATE"  # from the resolver's column hints


def test_no_hash_columns_after_mutations(sync: Sync, mutated: dict[str, Any]) -> None:
    test_no_column_or_table_is_named_after_a_hash(sync)


def test_keep_option_ids_puts_raw_ids_next_to_labels(emulator: EmulatorHandle, tmp_path: Path) -> None:
    s = Sync(emulator, tmp_path, entities=["deals"], keep_option_ids=True)
    s.run()
    defs = custom_defs(emulator, "deals")
    columns = column_of(s, "deals")
    deals = s.table("deals")
    enum_code = next(c for c, fd in defs.items() if fd["field_name"] == "Enum field")
    set_code = next(c for c, fd in defs.items() if fd["field_name"] == "Set field")
    id_lists = s.children("deals", columns[set_code] + "_ids")
    checked = 0
    for record in emulator.control.snapshot("deals"):
        if record["id"] not in deals:
            continue
        row, values = deals[record["id"]], record["custom_fields"]
        assert row[columns[enum_code] + "_id"] == values.get(enum_code)
        assert row[columns[enum_code]] == label(defs[enum_code], values.get(enum_code))
        assert id_lists.get(record["id"], []) == (values.get(set_code) or [])
        checked += bool(values.get(enum_code))
    assert checked


# --- the engine's defaults ------------------------------------------------------------------------------


def test_source_resolves_custom_fields_by_default(emulator: EmulatorHandle, tmp_path: Path) -> None:
    pipeline = dlt.pipeline(
        pipeline_name="cf_default",
        pipelines_dir=str(tmp_path),
        destination=dlt.destinations.duckdb(str(tmp_path / "d.duckdb")),
        dataset_name=DATASET,
    )
    pipeline.run(
        pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, entities=["deals"])
    )
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        cols = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'deals'"
            ).fetchall()
        ]
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert not [c for c in cols if HEX40.search(c)]
    assert {"custom_fields", "custom_field_options"} <= tables


def test_a_run_over_some_entities_keeps_the_other_entities_field_rows(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`custom_fields` / `custom_field_options` merge on `entity`: `--entities deals` after a full sync
    replaces the deals rows (here a renamed field and a new option) and leaves the persons rows alone."""
    s = Sync(emulator, tmp_path)
    s.run()
    fields = "SELECT entity, field_code, field_name FROM pipedrive.custom_fields"
    options = "SELECT entity, field_code, option_id, label FROM pipedrive.custom_field_options"
    before = {t: s.query(f"{q} WHERE entity = 'persons'") for t, q in (("f", fields), ("o", options))}
    assert before["f"] and before["o"]
    code = next(c for c, fd in custom_defs(emulator, "deals").items() if fd["field_type"] == "enum")
    emulator.control.mutate(
        ops=[
            {"op": "rename_field", "entity": "deal", "field_code": code, "name": "Renamed for merge"},
            {"op": "add_option", "entity": "deal", "field_code": code, "label": "Merged option"},
        ]
    )
    s.source_args["entities"] = ["deals"]
    s.run()
    assert {t: s.query(f"{q} WHERE entity = 'persons'") for t, q in (("f", fields), ("o", options))} == before
    deals = s.query(f"{fields} WHERE entity = 'deals' AND field_code = '{code}'")
    assert [r["field_name"] for r in deals] == ["Renamed for merge"]
    labels = [r["label"] for r in s.query(f"{options} WHERE entity = 'deals' AND field_code = '{code}'")]
    assert "Merged option" in labels and len(labels) == len(set(labels))


def test_relabelled_option_reaches_projects_read_once_a_day(tmp_path: Path) -> None:
    """Projects are read in full once a day; a relabel seen before then left the labels loaded before
    stale until that read (while `custom_field_options` showed the new one). Now the run that sees it
    reads projects at once, and loads the rows whose labels changed."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        s = Sync(emulator, tmp_path, entities=["projects"])
        s.run()
        defs = custom_defs(emulator, "projects")
        code = next(c for c, fd in defs.items() if fd["field_type"] == "enum")
        held = [p["custom_fields"][code] for p in emulator.control.snapshot("projects")]
        option = next(v for v in held if v is not None)
        relabel = {"field_code": code, "option_id": option, "label": "Renamed tier"}
        emulator.control.mutate(
            ops=[
                {"op": "relabel_option", "entity": "project", **relabel},
                {"op": "advance_clock", "seconds": 600},  # the next run, well before a day has passed
            ]
        )
        s.run()
        fd = custom_defs(emulator, "projects")[code]
        truth = emulator.control.snapshot("projects")
    column = column_of(s, "projects")[code]
    projects = s.table("projects")
    for record in truth:
        assert projects[record["id"]][column] == label(fd, record["custom_fields"][code]), record["id"]


def test_a_full_refresh_of_some_entities_then_a_run_restores_the_field_tables(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """`--full-refresh --entities deals` is dlt's refresh="drop_resources": it drops the tables of every
    resource of the run, `custom_fields` and `custom_field_options` among them. The run then loads the
    deals' rows, and the next run covering the other entities loads theirs: every entity's fields are
    described again, as the emulator defines them."""
    s = Sync(emulator, tmp_path)
    s.run()
    s.source_args["entities"] = ["deals"]
    s.pipeline.run(pipedrive_source(**s.source_args), loader_file_format="parquet", refresh="drop_resources")
    assert set(column_of(s, "deals")) == set(custom_defs(emulator, "deals"))
    s.source_args["entities"] = ENTITIES
    s.run()
    fields = s.query(f"SELECT entity, field_code FROM {DATASET}.custom_fields WHERE still_exists")
    options = s.query(f"SELECT DISTINCT entity, field_code FROM {DATASET}.custom_field_options")
    for entity in ENTITIES:
        defs = custom_defs(emulator, entity)
        assert {r["field_code"] for r in fields if r["entity"] == entity} == set(defs), entity
        with_options = {code for code, fd in defs.items() if fd["options"]}
        assert with_options <= {r["field_code"] for r in options if r["entity"] == entity}, entity


def test_deleting_a_field_moves_no_other_field_off_its_column(tmp_path: Path) -> None:
    """A deleted field keeps its column reserved, with the suffixes its type could have had. Those guesses
    used to win over live fields and built-ins: deleting "Contract" moved the live "Contract until" off
    `contract_until` (its `_until` guess) to `contract_until_2`, old rows in one column and changed rows in
    the other; deleting "Owner" dropped the reservation (its `_id` guess is deals' built-in `owner_id`) and
    a new "Owner" field took over the column holding the deleted field's values."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        names = ["Contract", "Contract until", "Owner"]
        added = emulator.control.mutate(
            ops=[
                {"op": "add_field", "entity": "deal", "name": n, "field_type": "varchar", "fill": 5}
                for n in names
            ]
        )
        codes = {f["name"]: f["field_code"] for f in added["fields"]}
        assert codes["Contract"] < codes["Contract until"]  # the deleted field's binding is looked at first
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
        before = column_of(s, "deals")
        assert [before[codes[n]] for n in names] == ["contract", "contract_until", "owner"]
        deal = sorted(s.table("deals"))[0]
        emulator.control.mutate(
            ops=[
                {"op": "delete_field", "entity": "deal", "field_code": codes["Contract"]},
                {"op": "delete_field", "entity": "deal", "field_code": codes["Owner"]},
                {
                    "op": "update",
                    "table": "deals",
                    "id": deal,
                    "changes": {"custom_fields": {codes["Contract until"]: "2031"}},
                },
                {"op": "add_field", "entity": "deal", "name": "Owner", "field_type": "varchar", "fill": 5},
            ]
        )
        s.run()
        fields = emulator.control.snapshot("deal_fields")
    new_owner = next(f["field_code"] for f in fields if f["field_name"] == "Owner" and f["is_custom_field"])
    after = column_of(s, "deals")
    assert {code: after.get(code) for code in before} == before
    assert after[new_owner] == "owner_2"
    assert s.table("deals")[deal]["contract_until"] == "2031"
    assert "contract_until_2" not in s.columns()["deals"]


def test_a_fraction_in_an_int_field_is_kept_not_cut(tmp_path: Path) -> None:
    """An `int` field holding 1.5 (legacy numeric fields take what the API is given) loaded as 1: the
    converter's int() cut it. A whole float still lands as a bigint; a fraction goes where dlt keeps a
    value its column's type cannot hold (the `__v_double` variant column), as a bad date or text does."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        code = next(c for c, fd in custom_defs(emulator, "deals").items() if fd["field_type"] == "int")
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
        whole, fraction = sorted(s.table("deals"))[:2]
        values = {whole: 7.0, fraction: 1.5}
        updates = [
            {"op": "update", "table": "deals", "id": rid, "changes": {"custom_fields": {code: v}}}
            for rid, v in values.items()
        ]
        emulator.control.mutate(ops=updates)
        s.run()
    column = column_of(s, "deals")[code]
    deals = s.table("deals")
    assert deals[whole][column] == 7
    assert (deals[fraction][column], deals[fraction].get(f"{column}__v_double")) == (None, 1.5)


def test_symbols_in_field_names_become_words_of_their_own(tmp_path: Path) -> None:
    """`&`, `%`, `#`, `$` are spelled out; glued to their neighbours, dlt's camelCase split mangled them:
    "R&D budget" was `rand_d_budget`, "ID#" `i_dno`, "Margin%" `marginpct`."""
    names = {"R&D budget": "r_and_d_budget", "ID#": "id_no", "Margin%": "margin_pct", "Cost$": "cost_usd"}
    with run_emulator(seed=7, scale="tiny") as emulator:
        added = emulator.control.mutate(
            ops=[
                {"op": "add_field", "entity": "deal", "name": n, "field_type": "varchar", "fill": 5}
                for n in names
            ]
        )
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
        truth = {r["id"]: r["custom_fields"] for r in emulator.control.snapshot("deals")}
    columns = column_of(s, "deals")
    deals = s.table("deals")
    for field in added["fields"]:
        column = columns[field["field_code"]]
        assert column == names[field["name"]]
        filled = {rid: v[field["field_code"]] for rid, v in truth.items() if v[field["field_code"]]}
        assert filled and {rid: deals[rid][column] for rid in filled} == filled


def test_a_whole_number_beyond_64_bits_in_an_int_field_does_not_stop_the_sync(tmp_path: Path) -> None:
    """An `int` field holding 1e22 or 2**64 - 1 (legacy numeric fields take what the API is given) failed
    every sync for good: dlt's writers cannot hold an integer beyond 64 bits, and each later run read the
    same record again. Such a value goes to the text variant column as the float JSON gives any number
    beyond 64 bits (dlt would turn digits back into the integer); a bigint's bounds land in the column.
    Digits beyond a double as well (400) raised OverflowError in the resolver: kept as they came."""
    values = [2**63 - 1, -(2**63), 1e22, 2**64 - 1, "-99999999999999999999", "9" * 400]
    with run_emulator(seed=7, scale="tiny") as emulator:
        code = next(c for c, fd in custom_defs(emulator, "deals").items() if fd["field_type"] == "int")
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
        ids = sorted(s.table("deals"))[: len(values)]
        emulator.control.mutate(
            ops=[
                {"op": "update", "table": "deals", "id": rid, "changes": {"custom_fields": {code: v}}}
                for rid, v in zip(ids, values, strict=True)
            ]
        )
        s.run()
    column = column_of(s, "deals")[code]
    got = [
        (row[column], row.get(f"{column}__v_double"), row.get(f"{column}__v_text"))
        for row in map(s.table("deals").__getitem__, ids)
    ]
    assert got == [
        (2**63 - 1, None, None),
        (-(2**63), None, None),
        (None, None, "1e+22"),
        (None, None, "1.8446744073709552e+19"),
        (None, None, "-1e+20"),
        (None, None, "9" * 400),
    ]


# --- definitions that change while a run reads ---------------------------------------------------------


def fields_requests(emulator: EmulatorHandle) -> int:
    return emulator.control.stats()["requests"].get("/api/v2/dealFields", 0)


def epoch(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp())


class AfterFieldsRead:
    """A record hook: `action()` once, as the run's deal field definitions arrive. The deals' read waits
    for those definitions, so what `action` changes reaches the deals read with definitions read before."""

    def __init__(self, action: Callable[[], Any]) -> None:
        self.action, self.fired = action, False

    def __call__(self, entity: Any, rows: list[dict], ctx: Any) -> list[dict]:
        if entity.name == "deal_fields" and not self.fired:
            self.fired = True
            self.action()
        return rows


def change_mid_run(emulator: EmulatorHandle, s: Sync, ops: Callable[[int], list[dict]]) -> None:
    """A second run of `s` whose deal field definitions are read before `ops(update_time)` are applied;
    `update_time` lies inside the run's window, so records changed with it are read by that run."""
    clock = emulator.control.mutate(ops=[{"op": "advance_clock", "seconds": 600}])["clock"]
    hook = AfterFieldsRead(lambda: emulator.control.mutate(advance_seconds=1, ops=ops(epoch(clock) - 5)))
    s.source_args["record_hooks"] = [hook]
    emulator.control.reset_stats()
    s.run()
    assert hook.fired


def test_an_option_added_while_the_run_reads_gets_its_label(tmp_path: Path) -> None:
    """An option added in Pipedrive after the run read the field definitions, on a record the run reads:
    its label column was NULL (the id unknown, no warning). The run reads the definitions again, once."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        code = next(c for c, fd in custom_defs(emulator, "deals").items() if fd["field_name"] == "Enum field")
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
        deals = sorted(s.table("deals"))

        def ops(update_time: int) -> list[dict]:
            added = emulator.control.mutate(
                ops=[{"op": "add_option", "entity": "deal", "field_code": code, "label": "Platinum"}]
            )
            new_id = added["fields"][0]["option_id"]
            change = {"custom_fields": {code: new_id}, "update_time": update_time}
            return [{"op": "update", "table": "deals", "id": rid, "changes": change} for rid in deals[:2]]

        change_mid_run(emulator, s, ops)
        assert fields_requests(emulator) == 2  # at the start, and once again for the unknown id
        truth = {r["id"]: r["custom_fields"][code] for r in emulator.control.snapshot("deals")}
    column = column_of(s, "deals")[code]
    rows = s.table("deals")
    assert [rows[rid][column] for rid in deals[:2]] == ["Platinum", "Platinum"]
    options = s.query(f"SELECT label FROM {DATASET}.custom_field_options WHERE field_code = '{code}'")
    assert "Platinum" in [r["label"] for r in options]  # the same run's table lists it
    assert len({truth[rid] for rid in deals[:2]}) == 1


def test_an_option_deleted_in_pipedrive_keeps_its_id_visible(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Records still holding a deleted option's id loaded a NULL label without a word: the id was lost
    unless `--keep-option-ids`. Its text stays in the label column, one warning names field and ids, and
    the definitions are read again once per run (they may have gained the option meanwhile). Leads read the
    deal fields through v1 too, which lists deleted options (`options_deleted`): they keep the label."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        defs = custom_defs(emulator, "deals")
        enum = next(c for c, fd in defs.items() if fd["field_name"] == "Enum field")
        set_ = next(c for c, fd in defs.items() if fd["field_name"] == "Set field")
        s = Sync(emulator, tmp_path, entities=["deals", "leads"])
        s.run()
        truth = {r["id"]: r["custom_fields"] for r in emulator.control.snapshot("deals")}
        leads = {r["id"]: r.get(enum) for r in emulator.control.snapshot("leads")}
        gone_enum = next(v[enum] for v in truth.values() if v[enum] is not None)
        gone_label = label(defs[enum], gone_enum)
        gone_set = next(v[set_][0] for v in truth.values() if v[set_])
        emulator.control.mutate(
            ops=[
                {"op": "delete_option", "entity": "deal", "field_code": enum, "option_id": gone_enum},
                {"op": "delete_option", "entity": "deal", "field_code": set_, "option_id": gone_set},
            ]
        )
        emulator.control.reset_stats()
        with caplog.at_level(logging.WARNING, logger="pipedrive_source.custom_fields"):
            s.run()  # a removed option: the deals are read again in full
        assert fields_requests(emulator) == 2
        defs = custom_defs(emulator, "deals")
    assert gone_enum not in [o["id"] for o in defs[enum]["options"]]
    columns = column_of(s, "deals")
    rows, sets = s.table("deals"), s.children("deals", columns[set_])
    holders = [rid for rid, v in truth.items() if v[enum] == gone_enum]
    assert holders and all(rows[rid][columns[enum]] == str(gone_enum) for rid in holders)
    for rid, v in truth.items():
        want = [label(defs[set_], i) or str(i) for i in v[set_] or ()]
        assert sets.get(rid, []) == want
        if v[enum] not in (None, gone_enum):
            assert rows[rid][columns[enum]] == label(defs[enum], v[enum])
    lead_rows = s.table("leads")
    lead_holders = [rid for rid, v in leads.items() if v == gone_enum]
    lead_column = column_of(s, "leads")[enum]
    assert lead_holders and all(lead_rows[rid][lead_column] == gone_label for rid in lead_holders)
    warned = [m for m in caplog.messages if "does not list" in m]
    assert len(warned) == 2
    assert any("Enum field" in m and str(gone_enum) in m for m in warned)
    assert any("Set field" in m and str(gone_set) in m for m in warned)


def test_a_builtin_option_id_pipedrive_does_not_list_keeps_its_id_visible(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A deal label deleted in Pipedrive, or a `visible_to` id the deal fields do not list, loaded a NULL
    label (`labels`, `visible_to_label`) without a word, as custom fields once did. Now the same: the
    id's text is kept, one warning per field names it, the definitions are read again once."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
        deals = sorted(s.table("deals"))
        truth = {r["id"]: r for r in emulator.control.snapshot("deals") if r["id"] in deals}
        gone = next(r["label_ids"][0] for r in truth.values() if r["label_ids"])
        unlisted = 1 + max(o["id"] for o in builtin_defs(emulator)["visible_to"]["options"])
        emulator.control.mutate(
            ops=[
                {"op": "delete_option", "entity": "deal", "field_code": "label_ids", "option_id": gone},
                *(
                    {"op": "update", "table": "deals", "id": rid, "changes": {"visible_to": unlisted}}
                    for rid in deals[:2]
                ),
            ]
        )
        emulator.control.reset_stats()
        with caplog.at_level(logging.WARNING, logger="pipedrive_source.custom_fields"):
            s.run()  # a removed option: the deals are read again in full
        assert fields_requests(emulator) == 2
        defs = builtin_defs(emulator)
        truth = {r["id"]: r for r in emulator.control.snapshot("deals") if r["id"] in deals}
    assert gone not in [o["id"] for o in defs["label_ids"]["options"]]
    rows, labels = s.table("deals"), s.children("deals", "labels")
    assert [rows[rid]["visible_to_label"] for rid in deals[:2]] == [str(unlisted)] * 2
    for rid, r in truth.items():
        want = [label(defs["label_ids"], i) or str(i) for i in r["label_ids"]]
        assert labels.get(rid, []) == want
        if rid not in deals[:2]:
            assert rows[rid]["visible_to_label"] == label(defs["visible_to"], r["visible_to"])
    assert any(str(gone) in labels.get(rid, []) for rid in truth)
    warned = [m for m in caplog.messages if "does not list" in m]
    assert len(warned) == 2
    by_column = {c: m for m in warned for c in ("labels", "visible_to_label") if f"column '{c}'" in m}
    assert f"option id(s) {gone} " in by_column["labels"]
    assert f"option id(s) {unlisted} " in by_column["visible_to_label"]


def builtin_defs(emulator: EmulatorHandle) -> dict[str, dict[str, Any]]:
    fields = emulator.control.snapshot("deal_fields")
    return {f["field_code"]: f for f in fields if not f["is_custom_field"]}


def test_a_field_added_while_the_run_reads_is_named_and_described(tmp_path: Path) -> None:
    """A value under a field created after the run read the definitions went to `cf_<8 chars>` with no
    `custom_fields` row saying what that column is. The definitions read again name it, and the same run's
    `custom_fields` describes it (written before the deals were read, it lagged a run behind)."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
        deal = sorted(s.table("deals"))[0]
        added: dict[str, Any] = {}

        def ops(update_time: int) -> list[dict]:
            op = {"op": "add_field", "entity": "deal", "name": "Born mid-run", "field_type": "varchar"}
            added.update(emulator.control.mutate(ops=[op])["fields"][0])
            change = {"custom_fields": {added["field_code"]: "hello"}, "update_time": update_time}
            return [{"op": "update", "table": "deals", "id": deal, "changes": change}]

        change_mid_run(emulator, s, ops)
        assert s.table("deals")[deal]["born_mid_run"] == "hello"
        assert not [c for c in s.columns()["deals"] if c.startswith("cf_")]
    described = s.query(f"SELECT * FROM {DATASET}.custom_fields WHERE field_code = '{added['field_code']}'")
    assert [(r["field_name"], r["column_name"], r["still_exists"]) for r in described] == [
        ("Born mid-run", "born_mid_run", True)
    ]
    assert s.table("deals")[deal]["born_mid_run"] == "hello"


def test_an_address_part_pipedrive_adds_never_takes_another_fields_column(tmp_path: Path) -> None:
    """An address value with a part the definitions do not name (`floor`) went to `<address>_floor`: when
    another field is named so ("Address field floor"), one value overwrote the other, whichever came
    last. The other field keeps its column; the part gets `<address>_floor_2`."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        address = next(c for c, fd in custom_defs(emulator, "deals").items() if fd["field_type"] == "address")
        op = {"op": "add_field", "entity": "deal", "name": "Address field floor", "field_type": "varchar"}
        floor = emulator.control.mutate(ops=[op])["fields"][0]["field_code"]
        deal = emulator.control.snapshot("deals")[0]["id"]
        value = {"value": "Narva mnt 5, Tallinn", "country": "Estonia", "floor": "3rd"}
        change = {"custom_fields": {address: value, floor: "the other field"}}
        emulator.control.mutate(ops=[{"op": "update", "table": "deals", "id": deal, "changes": change}])
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
    columns = column_of(s, "deals")
    assert (columns[address], columns[floor]) == ("address_field", "address_field_floor")
    row = s.table("deals")[deal]
    assert (row["address_field_floor"], row["address_field_floor_2"]) == ("the other field", "3rd")
    assert (row["address_field"], row["address_field_country"]) == ("Narva mnt 5, Tallinn", "Estonia")


def test_an_address_part_keeps_its_column_when_a_field_of_that_name_comes_later(tmp_path: Path) -> None:
    """A part the definitions do not name (`floor`) got `address_field_floor` in one run; a field named
    "Address field floor" added later took that column in the next run, and the part moved to
    `address_field_floor_2`: one column held both, depending on the run. The part keeps its column (the
    state remembers it, `custom_fields.columns` names it); the new field gets `address_field_floor_2`."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        address = next(c for c, fd in custom_defs(emulator, "deals").items() if fd["field_type"] == "address")
        first, second = sorted(r["id"] for r in emulator.control.snapshot("deals"))[:2]
        value = {"value": "Narva mnt 5, Tallinn", "country": "Estonia", "floor": "3rd"}
        change = {"custom_fields": {address: value}}
        emulator.control.mutate(ops=[{"op": "update", "table": "deals", "id": first, "changes": change}])
        s = Sync(emulator, tmp_path, entities=["deals"])
        s.run()
        assert s.table("deals")[first]["address_field_floor"] == "3rd"
        op = {"op": "add_field", "entity": "deal", "name": "Address field floor", "field_type": "varchar"}
        floor = emulator.control.mutate(ops=[op])["fields"][0]["field_code"]
        changes = [
            {"op": "update", "table": "deals", "id": second, "changes": {"custom_fields": {floor: "other"}}},
            {"op": "update", "table": "deals", "id": first, "changes": {"title": "moved in"}},
        ]
        emulator.control.mutate(ops=changes)
        s.run()
    assert column_of(s, "deals")[floor] == "address_field_floor_2"
    rows = s.table("deals")
    assert (rows[first]["address_field_floor"], rows[first]["address_field_floor_2"]) == ("3rd", None)
    assert (rows[second]["address_field_floor"], rows[second]["address_field_floor_2"]) == (None, "other")
    (described,) = s.query(f"SELECT columns FROM {DATASET}.custom_fields WHERE field_code = '{address}'")
    assert described["columns"].endswith(", address_field_floor")


def test_a_field_unlisted_when_its_values_loaded_gets_its_own_typed_column_once_listed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A value under a field the definitions did not list, even read again (here: the fields endpoint down
    by then), went to `cf_<8 chars>` as text, and stayed there for good: once listed as a number, the
    field kept that VARCHAR column and its values stayed text. The run that finds it listed binds it to the
    column its name and type give, reads the deals again once (the value is not lost, it lands there),
    and `custom_fields` says so; the old column stays, empty for the rows read again."""
    check_unlisted_field_moves(tmp_path, caplog, text="VARCHAR", double="DOUBLE")


def check_unlisted_field_moves(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    *,
    text: str,
    double: str,
    destination: Any = None,
    loader_file_format: str = "parquet",
) -> None:
    """The scenario of the test above on a destination (`text`, `double`: its names of those types)."""
    with run_emulator(seed=7, scale="tiny") as emulator:
        s = Sync(emulator, tmp_path, entities=["deals"], destination=destination)
        s.loader_file_format = loader_file_format
        s.source_args.update(max_attempts=2, backoff_base_s=0)
        s.run()
        deal = sorted(s.table("deals"))[0]
        added: dict[str, Any] = {}

        def ops(update_time: int) -> list[dict]:
            op = {"op": "add_field", "entity": "deal", "name": "Win score", "field_type": "double"}
            added.update(emulator.control.mutate(ops=[op])["fields"][0])
            emulator.control.settings(down_path="/api/v2/dealFields")  # read again: in vain
            change = {"custom_fields": {added["field_code"]: 1.5}, "update_time": update_time}
            return [{"op": "update", "table": "deals", "id": deal, "changes": change}]

        change_mid_run(emulator, s, ops)
        placeholder = f"cf_{added['field_code'][:8]}"
        assert (s.columns()["deals"][placeholder], s.table("deals")[deal][placeholder]) == (text, "1.5")
        emulator.control.settings(down_path="")
        s.source_args.pop("record_hooks")
        with caplog.at_level(logging.INFO):
            s.run()
        assert s.columns()["deals"].get("win_score") == double
        rows = s.table("deals")
        assert (rows[deal]["win_score"], rows[deal][placeholder]) == (1.5, None)
        assert any("reading every deals record again" in m and "Win score" in m for m in caplog.messages)
        code = added["field_code"]
        described = s.query(f"SELECT * FROM {DATASET}.custom_fields WHERE field_code = '{code}'")
        assert [(r["field_name"], r["column_name"], r["field_type"]) for r in described] == [
            ("Win score", "win_score", "double")
        ]
        caplog.clear()
        with caplog.at_level(logging.INFO):
            s.run()  # moved once: the next run keeps the column and reads nothing again
    assert not [m for m in caplog.messages if "reading every deals record again" in m]
    assert column_of(s, "deals")[code] == "win_score"
    assert s.table("deals")[deal]["win_score"] == 1.5
