"""docs/tables.md is what `tools/table_reference.py` generates from the dlt schema of a real sync, and the
links the reference and the Dagster asset graph declare (`relations.py`) exist in that schema."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pipedrive_source.entities import BY_NAME
from pipedrive_source.history import SUFFIX
from pipedrive_source.relations import COLUMN_TABLE, FOREIGN_KEYS, NOT_LINKS, upstream

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("table_reference", ROOT / "tools" / "table_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["table_reference"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tool: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Any]]:
    yield tool.demo_schema(tmp_path_factory.mktemp("reference"))


def test_docs_tables_md_is_generated_from_the_current_schema(
    tool: ModuleType, demo: tuple[Any, Any, Any]
) -> None:
    committed = (ROOT / "docs" / "tables.md").read_text(encoding="utf-8")
    assert tool.render(*demo) == committed, "docs/tables.md is stale: uv run python tools/table_reference.py"


def test_every_synced_table_is_documented(tool: ModuleType, demo: tuple[Any, Any, Any]) -> None:
    schema, views, _ = demo
    text = tool.render(*demo)
    for table in schema.data_table_names():
        assert f"`{table}`" in text or f"## {table}" in text, table
    for view in views:
        assert f"### {view}" in text


def test_declared_links_exist_and_every_id_column_is_accounted_for(demo: tuple[Any, Any, Any]) -> None:
    schema = demo[0]
    for table, columns in FOREIGN_KEYS.items():
        present = set(schema.get_table_columns(table))
        assert set(columns) <= present, (table, set(columns) - present)
    for table in schema.data_table_names():
        if "__" in table or table.endswith(SUFFIX) or table not in BY_NAME:
            continue  # child tables and history copies follow their root table
        id_columns = {
            c
            for c in schema.get_table_columns(table)
            if c.endswith("_id") and "__" not in c and not c.startswith("_dlt")
        }
        undeclared = id_columns - set(FOREIGN_KEYS.get(table, ())) - NOT_LINKS
        assert not undeclared, f"{table}: add {sorted(undeclared)} to relations.FOREIGN_KEYS or NOT_LINKS"
        assert all(c in COLUMN_TABLE for c in FOREIGN_KEYS.get(table, ()))


def test_upstream_tables_form_no_cycle() -> None:
    """Dagster needs an acyclic asset graph: follow `upstream` from every table without coming back."""

    def visit(table: str, path: tuple[str, ...]) -> None:
        assert table not in path, " -> ".join((*path, table))
        for parent in upstream(table):
            visit(parent, (*path, table))

    for table in BY_NAME:
        visit(table, ())
    assert "persons" in upstream("deals") and "deal_fields" in upstream("deals")
    assert upstream("deal_products") == ["deals", "product_variations", "products"]
