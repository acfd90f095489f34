"""The synthetic Pipedrive company: tables, field catalog, emulator clock, counts and snapshots.

Visibility ("views") per table:
- deals: `live` (not archived, not deleted), `archived`, `deleted`; a deleted deal is revealed
  (`/api/v2/deals?status=deleted`, snapshot) only while deleted less than 30 days ago on the emulator clock;
- leads and projects: `live`, `archived`, `deleted`; deleted projects (status `deleted`) are revealed by
  `/api/v2/projects?status=deleted`, so they stay in the projects snapshot;
- notes and files: `live` unless `active_flag` is false;
- everything else: `live` unless `is_deleted`.
Other deleted records (besides recently deleted deals and deleted projects) are never revealed again.
The products, installments and discounts of a deleted deal are not revealed either (a deleted deal is
inaccessible except through `status=deleted`).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson

from . import followers, org_relationships, render
from .catalog import build_registry
from .clock import DAY, DEFAULT_START, to_datetime
from .fields import FieldRegistry
from .fieldsapi import FIELD_ENDPOINTS as FIELD_TABLES
from .fieldsapi import field_defs, field_items
from .followers import TABLES as FOLLOWER_TABLES
from .generate import HISTORY_DAYS, Generator
from .org_relationships import TABLE as RELATIONSHIPS
from .store import Record, Table

DELETED_DEAL_WINDOW = 30 * DAY

# Connector table name -> internal table (the ones the API lists directly).
V2_TABLES = (
    "activities",
    "deals",
    "deal_products",
    "deal_installments",
    "persons",
    "organizations",
    "products",
    "product_variations",
    "pipelines",
    "stages",
    "projects",
    "tasks",
    "boards",
    "phases",
    "project_templates",
    "deal_discounts",
)
V1_TABLES = (
    "leads",
    "lead_labels",
    "lead_sources",
    "notes",
    "files",
    "users",
    "call_logs",
    "activity_types",
    "currencies",
    "filters",
    "roles",
    "permission_sets",
    "goals",
    "teams",
)
DERIVED_TABLES = ("deal_flow", "deal_participants")
# per-record lists served as one record (or organization) sees them: followers (`followers.py`) and
# organization relationships (`org_relationships.py`)
PER_RECORD_TABLES = (*FOLLOWER_TABLES, RELATIONSHIPS)
# rows of a deal that a deleted deal takes out of sight with it
DEAL_CHILDREN = ("deal_products", "deal_installments", "deal_discounts")


def _flagged(rec: Record) -> str:
    return "deleted" if rec.get("is_deleted") or rec.get("_deleted") else "live"


def _archivable(rec: Record) -> str:
    if rec.get("is_deleted") or rec.get("_deleted"):
        return "deleted"
    return "archived" if rec.get("is_archived") or rec.get("archive_time") else "live"


def _active_flag(rec: Record) -> str:
    return "live" if rec.get("active_flag", True) else "deleted"


VIEW_OF = {
    "deals": _archivable,
    "leads": _archivable,
    "projects": _archivable,
    "notes": _active_flag,
    "files": _active_flag,
}


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep the cyclic GC from re-scanning millions of long-lived, cycle-free records while building them.

    (A process that only serves the company also `gc.freeze()`s them afterwards, see __main__; a shared
    process, e.g. tests with duckdb, must not freeze other libraries' objects.)"""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Company:
    """A whole Pipedrive company in memory. Callers hold `lock` around handle()/mutate()/snapshot()."""

    def __init__(self, seed: int, scale: str, start: int = DEFAULT_START):
        self.seed, self.scale = seed, scale
        self.clock = start
        self.start = start
        self.lock = threading.RLock()
        self.fields: FieldRegistry = build_registry(seed, start - HISTORY_DAYS * DAY)
        self.t: dict[str, Table] = {}
        self.flow_log: dict[int, list[dict[str, Any]]] = {}  # deal id -> changes mutations made
        self.mail_log: dict[int, list[dict[str, Any]]] = {}  # deal id -> mails mutations linked to it
        self.render_plans: dict[tuple[str, str, frozenset[str]], tuple[int, render.Plan]] = {}
        self._change_ids = 0
        # the person ids derived participants are drawn from: the generated ones (`generate` sets it), so
        # that a person created later does not change the participants of every deal
        self.participant_pool = 0
        self.merged_into: dict[int, int] = {}  # person id merged away -> the person kept (participants)
        # (followed table, record id) -> {user id: since (clock), None: removed}: mutations' follow/unfollow
        self.follows: dict[tuple[str, Any], dict[int, int | None]] = {}
        self.tables: list[str] = [*V2_TABLES, *V1_TABLES, *FIELD_TABLES, *DERIVED_TABLES, *PER_RECORD_TABLES]

    @classmethod
    def generate(cls, seed: int = 7, scale: str = "small", start: int = DEFAULT_START) -> Company:
        company = cls(seed, scale, start)
        with _gc_paused():
            out = Generator(seed, scale, start, company.fields).build()
            for name, rows in out.items():
                table = Table(name, VIEW_OF.get(name, _flagged))
                table.load(rows)
                company.t[name] = table
        company.participant_pool = company.t["persons"].max_id
        return company

    def prerender(self) -> int:
        """Render and cache every record the lists can serve, so that a first read costs a join of cached
        bytes rather than a render (mutations re-render only what they change), and build the indexes of
        the usual v2 orders (id, update_time). Returns the record count."""
        n = 0
        with _gc_paused():
            for name in (*V2_TABLES, *V1_TABLES):
                api = "v2" if name in V2_TABLES else "v1"
                t = self.t[name]
                for rec in self.revealed(name):
                    render.record_bytes(self, t, rec, api)
                    n += 1
                if api == "v2":
                    t.index("live", "id")
                    t.index("live", "update_time")
        return n

    # --- clock ---------------------------------------------------------------------------------------
    def now(self) -> datetime:
        return to_datetime(self.clock)

    def tick(self, seconds: int = 1) -> int:
        """Advance the emulator clock (mutations call this before stamping records)."""
        self.clock += max(1, int(seconds))
        return self.clock

    def next_change_id(self) -> int:
        self._change_ids += 1
        return self._change_ids

    # --- visibility ----------------------------------------------------------------------------------
    def deal_revealed(self, rec: Record) -> bool:
        """Deleted deals stay visible through `status=deleted` for 30 days after deletion."""
        if not rec.get("is_deleted"):
            return True
        return rec.get("_deleted_at", 0) > self.clock - DELETED_DEAL_WINDOW

    def revealed(self, table: str) -> list[Record]:
        """Every record of `table` the API can still reveal, in id order."""
        t = self.t[table]
        if table == "deals":
            rows = [r for r in t.rows.values() if self.deal_revealed(r)]
        elif table == "leads":
            rows = [r for r in t.rows.values() if t.view_of(r) != "deleted"]
        elif table == "projects":  # deleted projects are revealed by status=deleted
            rows = list(t.rows.values())
        else:
            rows = [r for r in t.rows.values() if t.view_of(r) == "live"]
        if table in DEAL_CHILDREN:
            deals = self.t["deals"].rows
            rows = [r for r in rows if not deals[r["deal_id"]]["is_deleted"]]
        elif table == "product_variations":  # /products/{id}/variations is a 404 for a deleted product
            products = self.t["products"]
            rows = [r for r in rows if products.view_of(products.rows[r["product_id"]]) == "live"]
        return sorted(rows, key=lambda r: r.get("_seq", r["id"]))

    # --- observation ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Live (not deleted) records per connector table; deals/leads/projects include archived ones."""
        out: dict[str, int] = {}
        for name in (*V2_TABLES, *V1_TABLES):
            t = self.t[name]
            out[name] = sum(1 for r in t.rows.values() if t.view_of(r) != "deleted")
            if name in (*DEAL_CHILDREN, "product_variations"):
                out[name] = len(self.revealed(name))
        for name in FIELD_TABLES:
            out[name] = len(field_defs(self, name))
        from .derived import flow_count, participant_count

        visible_deals = [d for d in self.t["deals"].rows.values() if not d["is_deleted"]]
        out["deal_flow"] = sum(flow_count(self, d) for d in visible_deals)
        out["deal_participants"] = sum(participant_count(self, d) for d in visible_deals)
        return out

    def snapshot(self, table: str) -> list[dict[str, Any]]:
        """Ground truth: every record the API can still reveal, rendered as the API renders it."""
        return orjson.loads(self.snapshot_json(table))

    def snapshot_json(self, table: str) -> bytes:
        """`snapshot(table)` as a JSON array, assembled from the cached renderings (no decode/encode)."""
        from .derived import snapshot_derived

        if table in FIELD_TABLES:
            return orjson.dumps(field_items(self, table))
        if table in DERIVED_TABLES:
            return orjson.dumps(snapshot_derived(self, table))
        if table in FOLLOWER_TABLES:
            return orjson.dumps(followers.snapshot(self, table))
        if table == RELATIONSHIPS:
            return orjson.dumps(org_relationships.snapshot(self))
        if table not in self.t:
            raise KeyError(table)
        api = "v2" if table in V2_TABLES else "v1"
        t = self.t[table]
        return b"[" + b",".join(render.record_bytes(self, t, r, api) for r in self.revealed(table)) + b"]"

    def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        from .mutations import apply

        return apply(self, body)

    def fields_changed(self, entity: str) -> None:
        """A field definition changed: drop cached renderings of the records that show its values."""
        self.fields.changed()
        for name, ent in render.CUSTOM_ENTITY.items():
            if ent == entity and name in self.t:
                self.t[name].clear_cache()
