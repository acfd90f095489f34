"""Write docs/tables.md from the dlt schema of a real sync, so the table reference never drifts from the code.

    uv run python tools/table_reference.py            # sync the bundled emulator, write docs/tables.md
    uv run python tools/table_reference.py --check    # exit 1 when docs/tables.md is out of date
    uv run python tools/table_reference.py --pipeline pipedrive [--pipelines-dir DIR]
                                                      # your own company's schema, to stdout

The default run syncs every entity (opt-in ones too) of the emulator's `tiny` company, with the optional deals
history, refreshes the analyst views, and renders tables, columns and dlt types from the resulting schema,
with what `entities.py` says about each entity and `views.py` about each view.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import dlt
from dlt.common.schema import Schema

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipedrive_source import ENTITIES, pipedrive_source  # noqa: E402
from pipedrive_source.entities import (  # noqa: E402
    BY_NAME,
    DEAL_BATCH,
    FULL,
    PER_PARENT,
    PER_RECORD,
    SORTED,
    UPDATED_SINCE,
    Entity,
)
from pipedrive_source.history import SUFFIX, VALIDITY_COLUMNS, add_history  # noqa: E402
from pipedrive_source.relations import references  # noqa: E402
from pipedrive_source.views import VIEWS, refresh_views  # noqa: E402

OUTPUT = ROOT / "docs" / "tables.md"
HISTORY_DEMO = ("deals",)
DLT_COLUMNS = ("_dlt_id", "_dlt_load_id", "_dlt_parent_id", "_dlt_list_idx", "_dlt_root_id")
CUSTOM_FIELD = re.compile(r"(^|_)[0-9a-f]{40}(_|$)")  # Pipedrive's custom field keys are 40 hex digits

STRATEGY = {
    UPDATED_SINCE: "incremental: records changed since the last run (`updated_since`, server-side filter)",
    SORTED: "incremental: newest first, reading stops at the last loaded change",
    FULL: "small list read in full each run; only changed records are loaded, vanished ones flagged",
    DEAL_BATCH: "rows of the deals changed in the run, up to 100 deals per request",
    PER_RECORD: "one request per parent record changed in the run",
    PER_PARENT: "one request per parent record",
}
# lists that can be neither filtered nor sorted: a full read costs a page per 50-500 records
FULL_READ_INTERVAL = {
    FULL: "list read in full at most once per `full_read_interval_hours` ({hours} h by default, 0: every "
    "run); only changed records are loaded, vanished ones flagged",
    PER_PARENT: "one request per parent record, all read at most once per `full_read_interval_hours` "
    "({hours} h by default, 0: every run) or when the parent list changed",
}


# ---- the schema ------------------------------------------------------------------------------------------


Demo = tuple[Schema, dict[str, list[tuple[str, str]]], dict[str, set[str]]]


def demo_schema(workdir: Path) -> Demo:
    """Schema, view columns and custom-field columns per table of a sync of the emulator's tiny company
    (every entity, deals history)."""
    from pipedrive_source.emulator import run_emulator

    pipeline = dlt.pipeline(
        pipeline_name="table_reference",
        destination=dlt.destinations.duckdb(credentials=str(workdir / "reference.duckdb")),
        dataset_name="pipedrive",
        pipelines_dir=str(workdir / "pipelines"),
    )
    with run_emulator(seed=7, scale="tiny") as emulator:
        source = pipedrive_source(
            api_token=emulator.api_token,
            base_url=emulator.base_url,
            entities=[entity.name for entity in ENTITIES],
        )
        add_history(source, HISTORY_DEMO, pipeline)
        pipeline.run(source, loader_file_format="parquet")
    refresh_views(pipeline)
    return pipeline.default_schema, view_columns(pipeline), custom_columns(pipeline)


def custom_columns(pipeline: dlt.Pipeline) -> dict[str, set[str]]:
    """Columns that hold custom fields, per table, from the connector's `custom_fields` table."""
    out: dict[str, set[str]] = {}
    if "custom_fields" not in pipeline.default_schema.tables:
        return out
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name("custom_fields")
        with client.execute_query(f"SELECT entity, column_name, columns FROM {table}") as cursor:
            for entity, column, columns in cursor.fetchall():
                names = {column, *re.split(r"[,\s]+", columns or "")} - {""}
                out.setdefault(entity, set()).update(names)
    return out


def view_columns(pipeline: dlt.Pipeline) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    with pipeline.sql_client() as client:
        for view in VIEWS:
            table = client.make_qualified_table_name(view.name)
            with client.execute_query(f"DESCRIBE {table}") as cursor:
                out[view.name] = [(row[0], str(row[1]).lower()) for row in cursor.fetchall()]
    return out


def pipeline_schema(name: str, pipelines_dir: str | None) -> Schema:
    pipeline = dlt.attach(pipeline_name=name, pipelines_dir=pipelines_dir)
    return pipeline.default_schema


# ---- rendering -------------------------------------------------------------------------------------------


def render(
    schema: Schema,
    views: dict[str, list[tuple[str, str]]] | None = None,
    custom: dict[str, set[str]] | None = None,
) -> str:
    custom = custom or {}
    tables = schema.data_tables()
    names = {table["name"] for table in tables}
    lines = [
        "# Table reference",
        "",
        "<!-- generated by tools/table_reference.py from the dlt schema; do not edit by hand -->",
        "",
        "Every table is merged on its primary key and keeps records deleted in Pipedrive with `is_deleted = "
        "true` (unless the sync runs with `--hard-delete`). Types are dlt's, chosen from Pipedrive's API "
        "spec (`pipedrive_source/column_types.py`: integer -> `bigint`, number -> `double`, so amounts of "
        "money are `double` even when whole, timestamps -> `timestamp`, dates -> `date`); on DuckDB `text` "
        "is VARCHAR, `bigint` BIGINT, `double` DOUBLE, `bool` BOOLEAN, `timestamp` TIMESTAMP WITH TIME ZONE "
        "(UTC), `date` DATE, `json` JSON. Columns are listed by name; a column exists from the first load "
        "on, even while no record has a value for it. Lists "
        "inside a record become child tables named `<table>__<list>`, joined by `child._dlt_parent_id = "
        "parent._dlt_id` (in order of `_dlt_list_idx`). dlt adds `_dlt_id` and `_dlt_load_id` to every table "
        "and `_dlt_parent_id`, `_dlt_list_idx` to child tables; they are left out below.",
        "",
        "Custom fields are columns too, named after the field (the `custom_fields` table maps each field to "
        "its columns). They differ per company, so below they are counted, not listed.",
        "",
        "## Tables",
        "",
        "| table | primary key | how it loads |",
        "|---|---|---|",
    ]
    for entity in ENTITIES:
        if entity.name in names:
            lines.append(f"| [{entity.name}](#{entity.name}) | `{entity.primary_key}` | {_loading(entity)} |")
    for table in sorted(n for n in names if n.endswith(SUFFIX) and "__" not in n):
        lines.append(f"| [{table}](#{table}) | `{', '.join(_history_key(schema, table))}` | SCD2 history |")
    for entity in ENTITIES:
        if entity.name in names:
            lines += _table_section(
                schema, entity.name, _entity_intro(entity), custom.get(entity.name, set())
            )
    for table in sorted(n for n in names if n.endswith(SUFFIX) and "__" not in n):
        base = table.removesuffix(SUFFIX)
        lines += _table_section(schema, table, _history_intro(table), custom.get(base, set()))
    for table in sorted(n for n in names - set(BY_NAME) if not n.endswith(SUFFIX) and "__" not in n):
        lines += _table_section(schema, table, ["Made by the connector from the field definitions."], set())
    if views:
        lines += _views_section(views)
    return "\n".join(lines).rstrip() + "\n"


def _loading(entity: Entity) -> str:
    text = STRATEGY[entity.strategy]
    if entity.full_read_hours is not None:  # call_logs, tasks, phases: neither filter nor sort in the API
        text = FULL_READ_INTERVAL[entity.strategy].format(hours=f"{entity.full_read_hours:g}")
    return text + (" (opt-in)" if entity.opt_in else "")


def _entity_intro(entity: Entity) -> list[str]:
    paths = ", ".join(
        f"`GET {listing.path}" + (f"?{_query(listing.params)}" if listing.params else "") + "`"
        for listing in entity.listings
    )
    lines = [f"API {entity.api}: {paths}.", f"Loading: {_loading(entity)}."]
    if entity.parent:
        lines.append(
            f"Parent: `{entity.parent}`"
            + (f" (rows replaced per `{entity.merge_key}`)." if entity.merge_key else ".")
        )
    links = references(entity.name)
    if links:
        lines.append("Links: " + ", ".join(f"`{column}` -> {table}" for column, table in links) + ".")
    if entity.opt_in:
        lines.append(f"Opt-in: name it in `entities` (e.g. `--entities {entity.name}`).")
    if entity.notes:
        lines.append(entity.notes)
    return lines


def _history_intro(table: str) -> list[str]:
    entity = table.removesuffix(SUFFIX)
    start, end = VALIDITY_COLUMNS
    return [
        f"Optional (`--history {entity}`): every version of each `{entity}` record the syncs saw, by dlt's "
        f"`scd2` merge strategy. `{start}` is when the sync that saw a version loaded it, `{end}` when a "
        f"later sync saw a newer one (NULL for the current version). Other columns as in `{entity}`."
    ]


def _history_key(schema: Schema, table: str) -> list[str]:
    columns = schema.get_table_columns(table)
    return [name for name, column in columns.items() if column.get("merge_key")] or ["_dlt_id"]


def _query(params: dict[str, Any]) -> str:
    return "&".join(f"{key}={value}" for key, value in params.items())


def _table_section(schema: Schema, table: str, intro: Iterable[str], custom: set[str]) -> list[str]:
    lines = ["", f"## {table}", "", *intro, "", "| column | type | |", "|---|---|---|"]
    lines += _column_rows(schema, table, custom)
    children = sorted(
        n for n in schema.tables if n.startswith(f"{table}__") and schema.tables[n].get("columns")
    )
    for child in children:
        columns = ", ".join(
            f"`{name}` {column.get('data_type', '?')}"
            for name, column in _sorted_columns(schema, child)
            if name not in DLT_COLUMNS
        )
        lines.append(f"| `{child}` | child table | {columns} |")
    return lines


def _column_rows(schema: Schema, table: str, custom_names: set[str]) -> list[str]:
    rows, custom = [], []
    for name, column in _sorted_columns(schema, table):
        if name in DLT_COLUMNS:
            continue
        if name in custom_names or CUSTOM_FIELD.search(name):
            custom.append(name)
            continue
        rows.append(f"| `{name}` | {column.get('data_type', '?')} | {_column_notes(column)} |")
    if custom:
        examples = ", ".join(f"`{name}`" for name in custom[:3])
        rows.append(f"| custom fields | | {len(custom)} columns in the demo company, e.g. {examples} |")
    return rows


def _sorted_columns(schema: Schema, table: str) -> list[tuple[str, Any]]:
    """Columns by name: the schema's own order follows which page reached dlt first (concurrent reads)."""
    return sorted(schema.get_table_columns(table).items())


def _column_notes(column: dict[str, Any]) -> str:
    notes = []
    if column.get("primary_key"):
        notes.append("primary key")
    if column.get("merge_key"):
        notes.append("merge key")
    if column.get("hard_delete"):
        notes.append("deleted rows are removed")
    if column.get("nullable") is False and not column.get("primary_key"):
        notes.append("not null")
    return ", ".join(notes)


def _views_section(views: dict[str, list[tuple[str, str]]]) -> list[str]:
    lines = [
        "",
        "## Views",
        "",
        "Created or refreshed after each load by `pipedrive_source.views.refresh_views`.",
    ]
    for view in VIEWS:
        lines += ["", f"### {view.name}", "", view.description, "", "| column | type |", "|---|---|"]
        lines += [f"| `{name}` | {kind} |" for name, kind in views.get(view.name, [])]
        if view.columns:
            lines += [""] + [f"- `{name}`: {meaning}" for name, meaning in view.columns.items()]
    return lines


# ---- command line ----------------------------------------------------------------------------------------


def generate() -> str:
    with tempfile.TemporaryDirectory() as workdir:
        schema, views, custom = demo_schema(Path(workdir))
    return render(schema, views, custom)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/tables.md is out of date")
    parser.add_argument("--pipeline", help="render this local pipeline's schema to stdout instead")
    parser.add_argument("--pipelines-dir", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    if args.pipeline:
        print(render(pipeline_schema(args.pipeline, args.pipelines_dir)), end="")
        return 0
    text = generate()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run `uv run python tools/table_reference.py`")
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
