"""Arrow pages load exactly what dlt's own JSON normalizer loads from the same records.

Records come from the emulator over HTTP (custom fields resolved as the connector does), and are loaded twice
into DuckDB: once as dicts through dlt's relational normalizer (nested tables), once as Arrow tables from
`arrow_pages.PageShaper`. Root tables must hold the same rows and column types; child tables the same rows
per parent (joined `child._dlt_parent_id = parent._dlt_id`, in `_dlt_list_idx` order). A second load of
changed records (fewer list items, empty lists, new items) checks that children of changed parents are
replaced, as dlt does for nested tables on merge.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dlt
import duckdb
import httpx
import pytest

from pipedrive_source.arrow_pages import PageShaper, emit
from pipedrive_source.custom_fields import Resolver
from pipedrive_source.emulator import EmulatorHandle

ENTITIES = {  # table -> (list path, fields path)
    "persons": ("/api/v2/persons", "/api/v2/personFields"),
    "deals": ("/api/v2/deals", "/api/v2/dealFields"),
    "activities": ("/api/v2/activities", None),
    "notes": ("/v1/notes", None),
    "leads": ("/v1/leads", "/api/v2/dealFields"),
}
MERGE = {"disposition": "merge", "strategy": "delete-insert"}
Pages = dict[str, tuple[list[list[dict[str, Any]]], dict[str, Any]]]


@pytest.fixture(scope="module")
def pages(emulator: EmulatorHandle) -> Pages:
    """Every record of each table in pages of 20, custom fields resolved, plus the resolver's column hints."""
    out: Pages = {}
    with httpx.Client(base_url=emulator.base_url, headers={"x-api-token": emulator.api_token}) as http:
        for table, (path, fields) in ENTITIES.items():
            resolver = Resolver(table, http.get(fields).json()["data"] if fields else [])
            records = _all(http, path)
            chunks = [records[i : i + 20] for i in range(0, len(records), 20)]
            out[table] = ([resolver.resolve_page(chunk) for chunk in chunks], resolver.columns)
    return out


def _all(http: httpx.Client, path: str) -> list[dict[str, Any]]:
    body = http.get(path, params={"limit": 500}).json()
    assert not (body.get("additional_data") or {}).get("next_cursor")  # tiny: one page each
    return body["data"]


def _changed(pages: Pages) -> Pages:
    """The same records after edits: lists shortened, emptied, grown; one list-valued field dropped."""
    out: Pages = {}
    for table, (chunks, columns) in pages.items():
        records = copy.deepcopy(chunks[0][:6])
        lists = [key for key, value in records[0].items() if isinstance(value, list)] or ["label_ids"]
        for i, record in enumerate(records):
            for key in lists:
                items = record.get(key) or []
                record[key] = [items[:1], [], items + items[:1], items][i % 4]
        out[table] = ([records], columns)
    return out


def _source(pages: Pages, arrow: bool) -> Any:
    def resource(table: str, chunks: list[list[dict[str, Any]]], columns: dict[str, Any]) -> Any:
        def records() -> Iterator[Any]:
            if not arrow:
                yield from copy.deepcopy(chunks)
                return
            res = dlt.current.resource()
            schema = dlt.current.source_schema()
            load_id = dlt.current.load_package_state()["load_id"]
            shaper = PageShaper(table, "id", schema, lambda: res.columns, load_id, replace_children=True)
            declared: set[str] = set()
            for chunk in copy.deepcopy(chunks):
                yield from emit(res, shaper.shape(chunk), declared)

        return dlt.resource(records, name=table, primary_key="id", write_disposition=MERGE, columns=columns)

    @dlt.source(name="pd", max_table_nesting=1)
    def source() -> list[Any]:
        return [resource(table, chunks, columns) for table, (chunks, columns) in pages.items()]

    return source()


def _load(workdir: Path, name: str, pages: Pages, arrow: bool) -> Path:
    pipeline = dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.duckdb(credentials=str(workdir / f"{name}.duckdb")),
        dataset_name="ds",
        pipelines_dir=str(workdir / "pipelines"),
    )
    pipeline.run(_source(pages, arrow), loader_file_format="parquet")
    return workdir / f"{name}.duckdb"


def _differences(json_db: Path, arrow_db: Path) -> list[str]:
    con = duckdb.connect()
    con.execute(f"ATTACH '{json_db}' AS j (READ_ONLY)")
    con.execute(f"ATTACH '{arrow_db}' AS a (READ_ONLY)")
    tables = {cat: _tables(con, cat) for cat in ("j", "a")}
    only = sorted(tables["j"] ^ tables["a"])
    problems = [f"tables only in one load: {only}"] if only else []
    for table in sorted(tables["j"] & tables["a"]):
        want, got = _columns(con, "j", table), _columns(con, "a", table)
        for column, data_type in want.items():
            if not column.startswith("_dlt") and got.get(column) != data_type:
                problems.append(f"{table}.{column}: type {got.get(column)} instead of {data_type}")
        common = [c for c in want if c in got and c not in ("_dlt_id", "_dlt_load_id", "_dlt_parent_id")]
        common = [c for c in common if c != "_dlt_root_id"]
        query = _query(table, common)
        for left, right in (("j", "a"), ("a", "j")):
            extra = con.execute(f"SELECT * FROM ({query(left)} EXCEPT ALL {query(right)}) LIMIT 3").fetchall()
            if extra:
                problems.append(f"{table}: rows only in the {left} load, e.g. {extra}")
        if not con.execute(f"SELECT count(*) FROM {query('j')}").fetchone()[0]:
            problems.append(f"{table}: no rows to compare")
    return problems


def _tables(con: duckdb.DuckDBPyConnection, catalog: str) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = 'ds'",
        [catalog],
    ).fetchall()
    return {r[0] for r in rows if not r[0].startswith("_dlt")}


def _columns(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> dict[str, str]:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = ? AND table_schema = 'ds' AND table_name = ?",
        [catalog, table],
    ).fetchall()
    return dict(rows)


def _query(table: str, columns: list[str]) -> Callable[[str], str]:
    listed = ", ".join(f'c."{c}"' for c in columns)
    if "__" not in table:
        return lambda cat: f"(SELECT {listed} FROM {cat}.ds.{table} c)"
    root = table.split("__")[0]
    return lambda cat: (
        f"(SELECT p.id AS parent_id, {listed} FROM {cat}.ds.{table} c "
        f"JOIN {cat}.ds.{root} p ON c._dlt_parent_id = p._dlt_id)"
    )


def test_arrow_pages_load_what_dlts_normalizer_loads(pages: Pages, tmp_path: Path) -> None:
    json_db = _load(tmp_path, "json", pages, arrow=False)
    arrow_db = _load(tmp_path, "arrow", pages, arrow=True)
    assert _differences(json_db, arrow_db) == []


def test_children_of_changed_parents_are_replaced(pages: Pages, tmp_path: Path) -> None:
    changed = _changed(pages)
    for arrow, name in ((False, "json"), (True, "arrow")):
        _load(tmp_path, name, pages, arrow)
        _load(tmp_path, name, changed, arrow)
    problems = _differences(tmp_path / "json.duckdb", tmp_path / "arrow.duckdb")
    assert problems == []
    with duckdb.connect(str(tmp_path / "arrow.duckdb"), read_only=True) as con:
        emptied = changed["persons"][0][0][1]["id"]  # its emails became []
        left = con.execute(
            "SELECT count(*) FROM ds.persons__emails c JOIN ds.persons p ON c._dlt_parent_id = p._dlt_id "
            "WHERE p.id = ?",
            [emptied],
        ).fetchone()[0]
        assert left == 0
        assert con.execute("SELECT count(*) FROM ds.persons__emails WHERE _dlt_deleted").fetchone()[0] == 0
