"""The declarative table of every Pipedrive entity the connector loads. Adding an entity = adding an entry.

Strategies (how a run finds what changed; see `source.py` for the engine):
- UPDATED_SINCE: v2 server-side filter `updated_since` (last loaded `update_time`, inclusive) ..
  `updated_until` (server time at run start), sorted by `update_time` ascending, cursor paging.
- SORTED: the endpoint sorts by update time descending; read pages until records are older than the last
  loaded `update_time` (early stop). v2 `sort_by=update_time&sort_direction=desc`, v1 `sort=update_time DESC`.
- FULL: read the whole (small) list every run; only records whose content changed are loaded (a digest per
  id is kept in the resource state, 16 bytes packed: `record_digests.py`) and ids that vanished are flagged
  `is_deleted`.
- DEAL_BATCH: child rows of the deals that changed in this run, `deal_ids=` up to 100 per request.
- PER_RECORD: one request per changed parent record (deal flow, participants and discounts, followers of
  deals, persons, organizations and products, organization relationships: opt-in because of the cost;
  product variations: products rarely change, and a reconcile reads them for every product).
- PER_PARENT: one request per record of a small parent list (phases per board).

Full-read interval (`full_read_hours`): a FULL/PER_PARENT list that can be neither filtered nor sorted and
costs a page per 50-500 records every run (call logs, projects, tasks, phases: one request per board) is
re-read at most once per interval (default `settings.FULL_READ_INTERVAL_HOURS`, 24 h; the source's
`full_read_interval_hours` overrides it, 0 = every run). The time of the last full read (server time) is in
the resource state. A run within the interval makes no request for it and loads nothing; changes made in
Pipedrive meanwhile arrive with the next full read, at most one interval late. A full read happens anyway on
the first run, after a full refresh (state dropped), with `reconcile=True`, and for phases whenever the
boards list changed. Only a full read notes live ids, so records vanished from these lists are flagged then.

`cost` is the operation's `x-token-cost` in Pipedrive's spec, charged per request (per page).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import deal_flow
from .settings import FULL_READ_INTERVAL_HOURS

UPDATED_SINCE = "updated_since"
SORTED = "sorted"
FULL = "full"
DEAL_BATCH = "deal_batch"
PER_RECORD = "per_record"
PER_PARENT = "per_parent"

CURSOR = "cursor"  # v2 `cursor` / `next_cursor`
OFFSET = "offset"  # v1 `start` / `limit`
NONE = "none"  # everything in one response

V2_DESC = {"sort_by": "update_time", "sort_direction": "desc"}
V1_DESC = {"sort": "update_time DESC"}
PROJECT_STATUSES = {"status": "open,completed,canceled,deleted"}
# `source_lead_id` (the lead a deal was converted from) is returned only when asked for.
DEAL_LISTING = {"status": "open,won,lost,deleted", "include_fields": "source_lead_id"}


@dataclass(frozen=True)
class Listing:
    """One list request of an entity; several listings can feed one table (deals + deleted + archived)."""

    path: str
    params: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)  # columns set on every row when absent (is_archived)
    cost: int | None = None  # overrides the entity's cost for this listing


@dataclass(frozen=True)
class Entity:
    name: str  # table name in the destination
    api: str  # "v1" | "v2"
    listings: tuple[Listing, ...]
    strategy: str
    cost: int  # x-token-cost per request
    paging: str = CURSOR
    page_size: int | None = 500
    primary_key: str = "id"
    cursor_field: str | None = "update_time"  # incremental cursor (UPDATED_SINCE and SORTED)
    time_format: str = "rfc3339"  # how this entity writes timestamps: rfc3339 | rfc3339_ms | v1
    items_key: str | None = None  # `data` holds {items_key: [...]} instead of a list
    fields_entity: str | None = None  # the `*_fields` table describing this entity's custom fields
    # a change log of that entity's records: a change of one of its custom fields is named as its table
    # names the field (`data.column_name`, option labels; see `custom_fields_hook`)
    changes_of: str | None = None
    parent: str | None = None  # the parent table (DEAL_BATCH, PER_RECORD, PER_PARENT)
    # PER_PARENT, PER_RECORD: the query parameter carrying the parent id (PER_RECORD: else `{id}` in the path)
    parent_param: str | None = None
    opt_in: bool = False  # left out unless named in `entities` (per-record cost)
    merge_key: str | None = None  # rows of a parent are replaced as a set (children of changed deals)
    references: tuple[tuple[str, str], ...] = ()  # (column, table): rows go when that record is gone
    derive: Callable[[dict[str, Any], Any], None] | None = None  # PER_RECORD: (row, parent id) adds columns
    # PER_RECORD: changes here leave the parent's update_time alone, so only a reconcile (which then reads
    # the children of every parent, loading the sets that changed: `source._ChildSets`) sees them
    reconcile_all_parents: bool = False
    full_read_hours: float | None = None  # FULL/PER_PARENT: re-read in full at most this often (None: always)
    # hints winning over the spec types (column_types); an object hinted `json` here stays one JSON column
    columns: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


def _child_row(
    column: str, key: str | None = None, own_key: str = "id"
) -> Callable[[dict[str, Any], Any], None]:
    """PER_RECORD rows: the parent's id as `column` (most per-parent lists leave it out of their items),
    and where an item's own key is unique only within its parent, a row key `key` = '<parent id>:<own
    key>' (a participation's id, a follower's user id; a relationship listed under both of its
    organizations, each with its own view of it)."""

    def derive(row: dict[str, Any], parent_id: Any) -> None:
        row[column] = parent_id
        if key:
            row[key] = f"{parent_id}:{row.get(own_key)}"

    return derive


def _followers(parent: str, column: str) -> Entity:
    """`<record>_followers`: the users following each changed record of `parent` (v2, cursor-paged)."""
    one = parent.removesuffix("s")
    return _v2(
        f"{one}_followers",
        f"/api/v2/{parent}/{{id}}/followers",
        PER_RECORD,
        parent=parent,
        opt_in=True,
        cursor_field=None,
        merge_key=column,
        derive=_child_row(column, "follower_key", own_key="user_id"),
        primary_key="follower_key",
        columns={"follower_key": {"data_type": "text"}, column: {"data_type": "bigint"}},
        notes=f"follower_key = '<{column}>:<user_id>', one row per {one} and user following it; the "
        f"followers of each changed {one} are read again, one request per {one} (a page per 500 "
        f"followers), and replace its rows as a set, so a follower removed goes with the {one}'s next "
        f"read. Whether adding or removing a follower stamps the {one} (its followers_count changes) the "
        f"spec does not say: one that leaves it unstamped shows with the {one}'s next change.",
    )


def _v2(name: str, path: str, strategy: str, cost: int = 10, **kw: Any) -> Entity:
    listings = kw.pop("listings", None) or (Listing(path, V2_DESC if strategy == SORTED else {}),)
    return Entity(name, "v2", listings, strategy, cost, **kw)


def _v1(name: str, path: str, strategy: str, cost: int = 20, **kw: Any) -> Entity:
    listings = kw.pop("listings", None) or (Listing(path, V1_DESC if strategy == SORTED else {}),)
    kw.setdefault("paging", OFFSET if strategy != FULL else NONE)
    kw.setdefault("time_format", "v1")
    return Entity(name, "v1", listings, strategy, cost, **kw)


def _fields(name: str, path: str, api: str, cost: int) -> Entity:
    if api == "v2":
        return Entity(name, "v2", (Listing(path),), FULL, cost, primary_key="field_code", cursor_field=None)
    return Entity(
        name,
        "v1",
        (Listing(path),),
        FULL,
        cost,
        paging=NONE,
        page_size=None,
        primary_key="key",
        cursor_field=None,
        time_format="v1",
    )


ENTITIES: tuple[Entity, ...] = (
    # ---- API v2, changed records by `updated_since` ------------------------------------------------------
    _v2("activities", "/api/v2/activities", UPDATED_SINCE, fields_entity="activity_fields"),
    _v2(
        "deals",
        "/api/v2/deals",
        UPDATED_SINCE,
        fields_entity="deal_fields",
        # `status=...,deleted` adds the deals deleted in the last 30 days (is_deleted true) to the live ones:
        # the v2 spec allows "Multiple statuses ... as a comma separated array", so one listing per endpoint.
        listings=(
            Listing("/api/v2/deals", DEAL_LISTING),
            Listing("/api/v2/deals/archived", DEAL_LISTING, cost=20),
        ),
        notes="2 requests per run minimum: live and archived, each with deals deleted in the last 30 days.",
    ),
    _v2("persons", "/api/v2/persons", UPDATED_SINCE, fields_entity="person_fields"),
    _v2("organizations", "/api/v2/organizations", UPDATED_SINCE, fields_entity="organization_fields"),
    # ---- API v2, children of changed deals ---------------------------------------------------------------
    _v2(
        "deal_products",
        "/api/v2/deals/products",
        DEAL_BATCH,
        parent="deals",
        cursor_field=None,
        merge_key="deal_id",
        notes="deal_ids= up to 100 changed deals per request; no request when no deal changed.",
    ),
    _v2(
        "deal_installments",
        "/api/v2/deals/installments",
        DEAL_BATCH,
        parent="deals",
        cursor_field=None,
        merge_key="deal_id",
        notes="Growth plan and above; skipped with a warning when the plan lacks it.",
    ),
    # ---- API v2, sortable by update_time: newest first, stop at the last loaded time ----------------------
    _v2("products", "/api/v2/products", SORTED, fields_entity="product_fields"),
    _v2(
        "product_variations",
        "/api/v2/products/{id}/variations",
        PER_RECORD,
        parent="products",
        cursor_field=None,
        merge_key="product_id",
        derive=_child_row("product_id"),
        reconcile_all_parents=True,
        notes="one request per changed product (none on a run without product changes); a variation "
        "deleted or added does not change its product, so it shows with the product's next change or "
        "the next reconcile, which reads every product's variations (one request per product).",
    ),
    # ---- API v2, small lists read in full every run: a deletion is known from the next run --------------
    # SORTED read them newest first in one request too (one page of 500 holds a company's pipelines and
    # stages), but the ids the page lacked were never compared: a deleted pipeline or stage ("Marks a
    # pipeline as deleted", the list leaves it out) stayed live in the destination until a reconcile
    _v2(
        "pipelines",
        "/api/v2/pipelines",
        FULL,
        cost=5,
        cursor_field=None,
        notes="one request per 500 pipelines; a deleted pipeline leaves the list and is flagged is_deleted "
        "by the next run. Its stages stay as the stages list has them (the spec does not say that deleting "
        "a pipeline deletes them).",
    ),
    _v2(
        "stages",
        "/api/v2/stages",
        FULL,
        cost=5,
        cursor_field=None,
        notes="one request per 500 stages; a deleted stage leaves the list and is flagged is_deleted by the "
        "next run.",
    ),
    # ---- API v2, neither filter nor sort: full read, changed rows only -----------------------------------
    _v2(
        "projects",
        "/api/v2/projects",
        FULL,
        fields_entity="project_fields",
        cursor_field=None,
        listings=(
            Listing("/api/v2/projects", PROJECT_STATUSES, flags={"is_archived": False}),
            Listing("/api/v2/projects/archived", PROJECT_STATUSES, flags={"is_archived": True}),
        ),
        full_read_hours=FULL_READ_INTERVAL_HOURS,
        notes="neither filter nor sort in the API (a large company's 3,000 projects: 7 pages a run): a "
        "full read at most once per full-read interval; status lists every status (by default Pipedrive "
        "leaves out projects with status deleted).",
    ),
    _v2(
        "tasks",
        "/api/v2/tasks",
        FULL,
        cursor_field=None,
        full_read_hours=FULL_READ_INTERVAL_HOURS,
        notes="neither filter nor sort in the API: a full read at most once per full-read interval.",
    ),
    _v2("boards", "/api/v2/boards", FULL, paging=NONE, page_size=None, cursor_field=None),
    _v2(
        "phases",
        "/api/v2/phases",
        PER_PARENT,
        paging=NONE,
        page_size=None,
        cursor_field=None,
        parent="boards",
        parent_param="board_id",
        full_read_hours=FULL_READ_INTERVAL_HOURS,
        notes="board_id is required: one request per board, once per full-read interval or when the boards "
        "changed.",
    ),
    _v2(
        "project_templates",
        "/api/v2/projectTemplates",
        FULL,
        cursor_field=None,
        time_format="rfc3339_ms",
        notes="neither filter nor sort in the API, a few records: read in full every run (one request); a "
        "deleted template leaves the list (flagged is_deleted).",
    ),
    # ---- API v2 field definitions --------------------------------------------------------------------------
    _fields("activity_fields", "/api/v2/activityFields", "v2", 10),
    _fields("deal_fields", "/api/v2/dealFields", "v2", 10),
    _fields("person_fields", "/api/v2/personFields", "v2", 10),
    _fields("organization_fields", "/api/v2/organizationFields", "v2", 10),
    _fields("product_fields", "/api/v2/productFields", "v2", 10),
    _fields("project_fields", "/api/v2/projectFields", "v2", 10),
    # ---- API v1 only --------------------------------------------------------------------------------------
    _v1(
        "leads",
        "/v1/leads",
        SORTED,
        fields_entity="lead_fields",
        time_format="rfc3339_ms",
        listings=(
            Listing("/v1/leads", V1_DESC, flags={"is_archived": False}),
            Listing("/v1/leads/archived", V1_DESC, flags={"is_archived": True}, cost=40),
        ),
        notes="ids are UUID strings; archived leads come from /v1/leads/archived.",
    ),
    _v1("lead_labels", "/v1/leadLabels", FULL, cost=10, cursor_field=None),
    _v1("lead_sources", "/v1/leadSources", FULL, cost=2, primary_key="name", cursor_field=None),
    _v1("notes", "/v1/notes", SORTED, fields_entity="note_fields"),
    _v1("files", "/v1/files", SORTED, page_size=100, notes="v1 caps files pages at 100."),
    _v1("users", "/v1/users", FULL, cursor_field=None),
    _v1(
        "call_logs",
        "/v1/callLogs",
        FULL,
        paging=OFFSET,
        page_size=50,
        cursor_field=None,
        full_read_hours=FULL_READ_INTERVAL_HOURS,
        notes="no sort or filter in the API, 50 per page: a full read at most once per full-read interval.",
    ),
    _v1("activity_types", "/v1/activityTypes", FULL, cursor_field=None),
    _v1("currencies", "/v1/currencies", FULL, cursor_field=None),
    _v1("filters", "/v1/filters", FULL, cursor_field=None),
    _v1("roles", "/v1/roles", FULL, paging=OFFSET, page_size=500, cursor_field=None),
    _v1("permission_sets", "/v1/permissionSets", FULL, cursor_field=None),
    _v1(
        "goals",
        "/v1/goals/find",
        FULL,
        items_key="goals",
        cursor_field=None,
        # without a filter the spec marks "If provided, everyone's goals will be returned" /goals/find
        # answers only the goals of the credentials' user; every goal tracks a quantity or a sum
        listings=tuple(
            Listing("/v1/goals/find", {"expected_outcome.tracking_metric": metric, "is_active": active})
            for metric in ("quantity", "sum")
            for active in ("true", "false")
        ),
        notes="/goals/find returns only the user's own active goals unless a filter asks for everyone's "
        "(by tracking metric) and for inactive ones too.",
    ),
    _v1(
        "teams",
        "/v1/legacyTeams",
        FULL,
        cursor_field=None,
        # the spec types these 0/1 flags as number: whole numbers, not doubles
        columns={"active_flag": {"data_type": "bigint"}, "deleted_flag": {"data_type": "bigint"}},
        notes="Pipedrive's (legacy) teams, read in full every run (one request); members are the child table "
        "teams__users (user ids, value), from the list itself. v1 only: the API has no v2 teams.",
    ),
    _fields("lead_fields", "/v1/leadFields", "v1", 20),
    _fields("note_fields", "/v1/noteFields", "v1", 20),
    # ---- opt-in: one request per changed deal -------------------------------------------------------------
    _v1(
        "deal_flow",
        "/v1/deals/{id}/flow",
        PER_RECORD,
        cost=40,
        # custom field changes are left out unless asked for (getDealUpdates' `all_changes`)
        listings=(Listing("/v1/deals/{id}/flow", {"all_changes": "1"}),),
        parent="deals",
        changes_of="deals",
        opt_in=True,
        primary_key="flow_id",
        cursor_field=None,
        paging=OFFSET,
        merge_key="deal_id",
        derive=deal_flow.flow_row,
        columns=deal_flow.COLUMNS,
        notes="changelog of each changed deal, every kind of item (dealChange, activity, note, file, "
        "mailMessage, ...) in the same columns: flow_id = '<object>:<id>' ('<object>:#<digest>' for an "
        "item without id); data__id is the item's own id; "
        "a field change's fields are data__* columns (old/new values of any field type as text); the "
        "data of every other kind, whole, is the JSON column item_data, as it was when the deal last "
        "changed (activities, notes and files as they are now: their own tables, joined on data__id). "
        "Custom field changes are included (all_changes=1): data__field_key is the field's hash (join "
        "custom_fields on field_code for its name), data__column_name the deals column holding it; an "
        "enum/set field's old/new values are labels as at the load (ids are not kept, keep_option_ids "
        "or not: custom_field_options maps labels to ids).",
    ),
    _v1(
        "deal_participants",
        "/v1/deals/{id}/participants",
        PER_RECORD,
        cost=10,
        parent="deals",
        opt_in=True,
        cursor_field=None,
        paging=OFFSET,
        merge_key="deal_id",
        derive=_child_row("deal_id", "participant_id"),
        primary_key="participant_id",
        columns={"participant_id": {"data_type": "text"}, "deal_id": {"data_type": "bigint"}},
        references=(("person_id__value", "persons"),),
        notes="participant_id = '<deal id>:<participation id>'; the person is person_id__value. The "
        "person's details in a row (person__*, person_id__name, _email, _phone) are as they were when the "
        "deal last changed: participants are read again only for changed deals, and editing a person does "
        "not change its deals. Join persons on person_id__value for current details. A deleted person "
        "leaves every deal (its rows go with the next reconcile).",
    ),
    # ---- opt-in: one request per changed deal (API v2) ----------------------------------------------------
    _v2(
        "deal_discounts",
        "/api/v2/deals/{id}/discounts",
        PER_RECORD,
        parent="deals",
        opt_in=True,
        cursor_field=None,
        paging=NONE,
        page_size=None,
        merge_key="deal_id",
        # the spec's `created_at` / `updated_at` are ISO 8601 times (its example: '2024-03-12T10:30:05Z')
        columns={"created_at": {"data_type": "timestamp"}, "updated_at": {"data_type": "timestamp"}},
        notes="id is the discount's UUID; every discount of each changed deal, in one request per deal (no "
        "paging in the API); the rows of a deal are replaced as a set, so a deleted discount goes with the "
        "deal's next read. The spec says a discount changes its deal's value when the deal has one-time "
        "products, not that it stamps the deal otherwise: a discount change that leaves the deal unstamped "
        "shows with the deal's next change.",
    ),
    # ---- opt-in: followers, one request per changed record (API v2) ---------------------------------------
    _followers("deals", "deal_id"),
    _followers("persons", "person_id"),
    _followers("organizations", "org_id"),
    _followers("products", "product_id"),
    # ---- opt-in: one request per changed organization (API v1: v2 has no relationships) -------------------
    _v1(
        "organization_relationships",
        "/v1/organizationRelationships",
        PER_RECORD,
        parent="organizations",
        parent_param="org_id",
        opt_in=True,
        cursor_field=None,
        paging=NONE,
        page_size=None,
        merge_key="org_id",
        derive=_child_row("org_id", "relationship_key"),
        primary_key="relationship_key",
        reconcile_all_parents=True,
        columns={"relationship_key": {"data_type": "text"}, "org_id": {"data_type": "bigint"}},
        references=(("calculated_related_org_id", "organizations"),),
        notes="relationship_key = '<org_id>:<id>': a relationship (id) is listed under both of its "
        "organizations, each row as seen from org_id (calculated_type, calculated_related_org_id, "
        "related_organization_name: the other organization); rel_owner_org_id__value = org_id keeps one "
        "row per relationship. Every relationship of each changed organization, one request per "
        "organization (org_id is required, no paging in the API); the rows of an organization are "
        "replaced as a set. Nothing in the spec says a relationship added or removed stamps its "
        "organizations: it shows with the organization's next change, or with a reconcile, which reads "
        "every organization's relationships again (one request per organization).",
    ),
)

BY_NAME: dict[str, Entity] = {e.name: e for e in ENTITIES}
FIELDS_TABLES: tuple[str, ...] = tuple(e.name for e in ENTITIES if e.name.endswith("_fields"))
DEFAULT_ENTITIES: tuple[str, ...] = tuple(e.name for e in ENTITIES if not e.opt_in)
