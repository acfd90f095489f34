"""Handlers of the API v2 endpoints: cursor-paginated lists, single records, fields, boards and phases.

Query semantics (beyond the generic validation in params.py):
- `updated_since` inclusive, `updated_until` exclusive, RFC3339 without fractional seconds, else 400;
- `sort_by` / `sort_direction` as the operation's enum allows (default `id` / `asc`); ties broken by id;
- `limit` default and maximum as the spec states them (100, 1..500), else 400 (`paging.page_limit`);
  `ids` up to 100 comma-separated ids;
- `/deals/products`, `/deals/installments`, `/deals/{id}/discounts`: rows of the given deals that are not
  deleted (a deleted deal's products are inaccessible like the deal itself);
- deals: no `status` = every not-deleted deal; `status` is a comma list of open, won, lost, deleted (the
  spec: "Multiple statuses can be included as a comma separated array"); the `deleted` member = deals
  deleted in the last 30 days of the emulator clock; `/deals` never returns archived deals,
  `/deals/archived` only those (with `deleted` each returns its own kind of recently deleted deal);
- projects: `status` is a comma list of open, completed, canceled, deleted; deleted projects are listed
  only when `deleted` is asked for, each by the list of its kind (`/projects` the not archived ones,
  `/projects/archived` the archived ones), as deals are; tasks' `parent_task_id=null` selects root tasks;
- equality filters (owner_id, person_id, org_id, pipeline_id, stage_id, deal_id, done, ...) compare the
  record field of the same name; tasks' `assignee_id` matches any of `assignee_ids`;
- `filter_id` is accepted (it is in the spec) but not emulated: saved filters' conditions do not exist here,
  so the list is returned unfiltered;
- `include_fields`, `custom_fields` (max 15 keys), `include_option_labels`, `include_labels` change the
  rendering of that response only (such pages are rendered uncached).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from . import followers as followed_by
from . import render
from .clock import parse_rfc3339
from .fieldsapi import field_items
from .paging import Ordered, decode_cursor, encode_cursor, keyset_page, page_limit, time_bounded
from .params import BadRequest, NotFound
from .shape import conform
from .store import Record, Table

if TYPE_CHECKING:
    from .company import Company
    from .spec import Operation

EQ_FILTERS = (
    "owner_id",
    "person_id",
    "org_id",
    "pipeline_id",
    "stage_id",
    "deal_id",
    "lead_id",
    "done",
    "project_id",
    "is_done",
    "is_milestone",
    "phase_id",
    "board_id",
    "product_id",
)
MAX_IDS = 100
MAX_CUSTOM_KEYS = 15


@dataclass
class Req:
    company: Company
    op: Operation
    path: dict[str, str]
    q: dict[str, Any]

    def path_id(self) -> int:
        try:
            return int(self.path["id"])
        except (KeyError, ValueError):
            raise BadRequest("Validation failed: id: Expected integer") from None


Handler = Callable[[Req], tuple[int, bytes]]


def envelope(items: list[bytes], next_cursor: str | None) -> bytes:
    head = b'{"success":true,"data":['
    tail = b'],"additional_data":{"next_cursor":' + orjson.dumps(next_cursor) + b"}}"
    if not items:
        return head + tail
    # A 500-record page is ~1 MB: copy it once, gluing head and tail onto the first and last item.
    parts = list(items)
    parts[0] = head + parts[0]
    parts[-1] = parts[-1] + tail
    return b",".join(parts)


def single(item: Any) -> bytes:
    return orjson.dumps({"success": True, "data": item})


# --- filters -------------------------------------------------------------------------------------------
def _time(q: dict[str, Any], name: str) -> int | None:
    raw = q.get(name)
    if raw is None:
        return None
    ts = parse_rfc3339(raw)
    if ts is None:
        raise BadRequest(
            f"Validation failed: {name}: Invalid date-time format, expected RFC3339 "
            f"without fractional seconds (e.g. 2025-01-01T10:20:00Z), received '{raw}'"
        )
    return ts


def _ids(q: dict[str, Any]) -> set[int] | None:
    raw = q.get("ids")
    if raw is None:
        return None
    try:
        ids = {int(x) for x in raw.split(",") if x.strip()}
    except ValueError:
        raise BadRequest("Validation failed: ids: Expected comma separated integers") from None
    if len(ids) > MAX_IDS:
        raise BadRequest(f"Validation failed: ids: A maximum of {MAX_IDS} ids is allowed")
    return ids


def _parent_task(raw: str) -> Callable[[Record], bool]:
    """Tasks' `parent_task_id`: `null` selects root tasks, an id the subtasks of that task."""
    if raw == "null":
        return lambda r: r.get("parent_task_id") is None
    try:
        parent = int(raw)
    except ValueError:
        raise BadRequest("Validation failed: parent_task_id: Expected an integer or null") from None
    return lambda r: r.get("parent_task_id") == parent


PROJECT_STATUSES = ("open", "completed", "canceled", "deleted")


def _statuses(raw: str) -> list[str]:
    """Projects' `status`: a comma list of open, completed, canceled, deleted."""
    values = [x.strip() for x in raw.split(",") if x.strip()]
    bad = [x for x in values if x not in PROJECT_STATUSES]
    if bad or not values:
        raise BadRequest(f"Validation failed: status: must be some of {', '.join(PROJECT_STATUSES)}")
    return values


def _deal_statuses(members: list[str]) -> frozenset[str]:
    """Deals' `status` as params.py parsed it (each member already checked against the enum)."""
    if not members:
        raise BadRequest("Validation failed: status: must be some of open, won, lost, deleted")
    return frozenset(members)


def _deal_status(company: Company, wanted: frozenset[str]) -> Callable[[Record], bool]:
    """A deal of a wanted status; a deleted one only within its 30-day window."""
    return lambda r: r.get("status") in wanted and company.deal_revealed(r)


def _predicate(req: Req, table: str) -> Callable[[Record], bool] | None:
    q = req.q
    checks: list[Callable[[Record], bool]] = []
    for name in EQ_FILTERS:
        if name in q:
            checks.append(lambda r, k=name, v=q[name]: r.get(k) == v)
    ids = _ids(q)
    if ids is not None:
        checks.append(lambda r: r["id"] in ids)
    if "assignee_id" in q:
        checks.append(lambda r, v=q["assignee_id"]: v in (r.get("assignee_ids") or ()))
    if "parent_task_id" in q:
        checks.append(_parent_task(q["parent_task_id"]))
    status = q.get("status")
    if status is not None and table == "projects":
        wanted = set(_statuses(status))
        checks.append(lambda r: r.get("status") in wanted)
    elif status is not None and table == "deals":
        checks.append(_deal_status(req.company, _deal_statuses(status)))
    elif status is not None:
        checks.append(lambda r: r.get("status") == status)
    if not checks:
        return None
    return lambda r: all(c(r) for c in checks)


def _ordered(
    table: Table,
    view: str,
    sort_by: str,
    since: int | None,
    until: int | None,
    keep: Callable[[Record], bool] | None,
) -> tuple[Ordered, Callable[[Record], bool] | None]:
    """The run of entries to read and the predicate still to apply to each record."""
    if sort_by == "update_time":
        return time_bounded(table, view, since, until), keep
    ix = table.index(view, sort_by)
    if since is None and until is None:
        return Ordered.whole(ix), keep
    tb = time_bounded(table, view, since, until)
    if (tb.hi - tb.lo) * 8 < len(ix):  # few records in the window: sort just those
        rows = table.rows
        cands = sorted((table.key_of(sort_by, rows[i]), i) for _, i in tb.entries[tb.lo : tb.hi])
        return Ordered.whole(cands), keep
    return Ordered.whole(ix), _in_window(since, until, keep)


def _in_window(
    since: int | None, until: int | None, keep: Callable[[Record], bool] | None
) -> Callable[[Record], bool] | None:
    """`keep` and since <= update_time < until (None when there is nothing to check)."""
    if since is None and until is None:
        return keep
    lo, hi = since if since is not None else -(2**62), until if until is not None else 2**62

    def in_window(r: Record) -> bool:
        stamp = r["update_time"]  # a record without one matches no time window, as in SQL
        return stamp is not None and lo <= stamp < hi and (keep is None or keep(r))

    return in_window


# --- rendering -------------------------------------------------------------------------------------------
def _render_options(req: Req, table: str) -> dict[str, Any] | None:
    q = req.q
    include = q.get("include_fields") or []
    keys = q.get("custom_fields")
    labels, option_labels = q.get("include_labels") is True, q.get("include_option_labels") is True
    if not include and keys is None and not labels and not option_labels:
        return None
    only = None
    if keys is not None:
        only = {k.strip() for k in keys.split(",") if k.strip()}
        if len(only) > MAX_CUSTOM_KEYS:
            raise BadRequest(
                f"Validation failed: custom_fields: A maximum of {MAX_CUSTOM_KEYS} keys is allowed"
            )
    return {"include": frozenset(include), "only": only, "labels": labels, "option_labels": option_labels}


def _extras(company: Company, table: str, rec: Record, names: frozenset[str]) -> dict[str, Any]:
    """Values of `include_fields` extras the record does not hold (the plan renders those, e.g. deals'
    `source_lead_id`): counts from the related tables, null where not emulated."""
    owner_key = {"deals": "deal_id", "persons": "person_id", "organizations": "org_id"}.get(table)
    out: dict[str, Any] = {}
    for name in sorted(names):
        related = name.removesuffix("_count").replace("done_", "").replace("undone_", "")
        source = {
            "products": "deal_products",
            "notes": "notes",
            "files": "files",
            "activities": "activities",
        }.get(related)
        if (
            name.endswith("_count")
            and source
            and owner_key
            and (source != "deal_products" or table == "deals")
        ):
            ids = company.t[source].group(owner_key).get(rec["id"], ())
            rows = company.t[source].rows
            live = [rows[i] for i in ids if company.t[source].view_of(rows[i]) == "live"]
            if name.startswith("done_"):
                live = [r for r in live if r.get("done")]
            elif name.startswith("undone_"):
                live = [r for r in live if not r.get("done")]
            out[name] = len(live)
        elif name.endswith("_count"):
            out[name] = 0
        else:
            out[name] = None
    return out


def _label_objects(company: Company, table: str, rec: Record) -> list[dict[str, Any]]:
    fd = company.fields.find(render.CUSTOM_ENTITY.get(table, ""), "label_ids")
    return [{"id": i, "label": fd.option_label(i) if fd else None} for i in rec.get("label_ids") or ()]


def render_page(req: Req, table: Table, page: list[Record]) -> list[bytes]:
    opts = _render_options(req, table.name)
    if opts is None:
        return [render.record_bytes(req.company, table, r, "v2") for r in page]
    return [orjson.dumps(d) for d in _items_with_options(req, table, page, opts)]


def _items_with_options(req: Req, table: Table, page: list[Record], opts: dict[str, Any]) -> list[dict]:
    """Items rendered for this request only (include_fields, custom_fields, labels, option labels)."""
    company = req.company
    plan = render.plan_for(company, table.name, "v2", opts["include"])
    out = []
    for r in page:
        d = render.item(plan, r, opts["only"], opts["option_labels"])
        d.update(_extras(company, table.name, r, opts["include"] - plan.props.keys()))
        if opts["labels"]:
            d["labels"] = _label_objects(company, table.name, r)
        out.append(d)
    return out


# --- handlers --------------------------------------------------------------------------------------------
def _sorting(req: Req) -> tuple[str, str]:
    p = req.op.params
    sort_by = req.q.get("sort_by", p["sort_by"].default if "sort_by" in p and p["sort_by"].default else "id")
    direction = req.q.get("sort_direction", "asc")
    return sort_by, direction


def list_page(
    req: Req, table: Table, view: str, keep: Callable[[Record], bool] | None, ordered: Ordered | None = None
) -> tuple[int, bytes]:
    limit = page_limit(req.op, req.q)
    sort_by, direction = _sorting(req)
    since, until = _time(req.q, "updated_since"), _time(req.q, "updated_until")
    if ordered is None:
        ordered, keep = _ordered(table, view, sort_by, since, until, keep)
    after = decode_cursor(req.q["cursor"], sort_by, direction) if req.q.get("cursor") else None
    page, last = keyset_page(table, ordered, after, direction == "desc", limit, keep)
    cursor = encode_cursor(sort_by, direction, last[0], last[1]) if last else None
    return 200, envelope(render_page(req, table, page), cursor)


def v2_list(name: str, view: str = "live") -> Handler:
    def handler(req: Req) -> tuple[int, bytes]:
        table, keep = req.company.t[name], _predicate(req, name)
        status = req.q.get("status")
        if name == "projects" and status:
            status = _statuses(status)
        if name in ("deals", "projects") and status and "deleted" in status:
            return _listed_with_deleted(req, table, view, keep, status)
        return list_page(req, table, view, keep)

    return handler


def _listed_with_deleted(
    req: Req, table: Table, view: str, keep: Callable[[Record], bool] | None, status: list[str]
) -> tuple[int, bytes]:
    """Deals' or projects' `status` with `deleted`: a deleted record is listed by the list of its kind, the
    archived ones only through `/archived` ("Returns all archived projects"), the others only through the
    list of the not archived ones ("Returns all non-archived projects")."""
    archived = view == "archived"

    def here(r: Record) -> bool:
        deleted = table.view_of(r) == "deleted"
        return (not deleted or _archived(r) == archived) and (keep is None or keep(r))

    if set(status) == {"deleted"}:
        return list_page(req, table, "deleted", here)
    return _with_deleted(req, table, (view, "deleted"), here)


def _archived(rec: Record) -> bool:
    """Archived (deals: `is_archived`; projects: an `archive_time`), deleted or not."""
    return bool(rec.get("is_archived") or rec.get("archive_time"))


def _with_deleted(
    req: Req, table: Table, views: tuple[str, ...], keep: Callable[[Record], bool] | None
) -> tuple[int, bytes]:
    """A `status` list naming `deleted` (deals, projects): the records of several views in one sorted run."""
    sort_by, _ = _sorting(req)
    since, until = _time(req.q, "updated_since"), _time(req.q, "updated_until")
    runs = [_ordered(table, v, sort_by, since, until, None)[0] for v in views]
    entries = sorted(e for run in runs for e in run.entries[run.lo : run.hi])
    return list_page(req, table, views[0], _in_window(since, until, keep), Ordered.whole(entries))


def by_deal_ids(name: str) -> Handler:
    """`/deals/products` and `/deals/installments`: rows of up to 100 deals, in one sorted run."""

    def handler(req: Req) -> tuple[int, bytes]:
        deal_ids = req.q.get("deal_ids") or []
        if not deal_ids:
            raise BadRequest("Validation failed: deal_ids: Required parameter 'deal_ids' is missing")
        if len(set(deal_ids)) > MAX_IDS:
            raise BadRequest(f"Validation failed: deal_ids: A maximum of {MAX_IDS} deal IDs can be provided")
        return _grouped(req, name, "deal_id", set(deal_ids), _deal_visible(req.company))

    return handler


def _deal_visible(company: Company) -> Callable[[int], bool]:
    """Products/installments are served for live and archived deals, not for deleted ones."""
    deals = company.t["deals"].rows
    return lambda did: did in deals and not deals[did]["is_deleted"]


def _grouped(
    req: Req, name: str, field: str, owners: set[Any], owner_ok: Callable[[Any], bool]
) -> tuple[int, bytes]:
    table = req.company.t[name]
    sort_by, _ = _sorting(req)
    group = table.group(field)
    rows = table.rows
    ids = [i for o in owners if owner_ok(o) for i in group.get(o, ())]
    entries = sorted((table.key_of(sort_by, rows[i]), i) for i in ids if table.view_of(rows[i]) == "live")
    return list_page(req, table, "live", None, Ordered.whole(entries))


def deal_products_of(req: Req) -> tuple[int, bytes]:
    """`/deals/{id}/products`: one deal's products (the same rows `/deals/products` gives)."""
    did = req.path_id()
    if not _deal_visible(req.company)(did):
        raise NotFound()
    return _grouped(req, "deal_products", "deal_id", {did}, lambda _: True)


def deal_discounts(req: Req) -> tuple[int, bytes]:
    """`/deals/{id}/discounts` (getAdditionalDiscounts): every discount of a live or archived deal at once,
    oldest first; the spec's response has no `additional_data` and the operation no paging parameters."""
    did = req.path_id()
    if not _deal_visible(req.company)(did):
        raise NotFound()
    table = req.company.t["deal_discounts"]
    rows = [table.rows[i] for i in table.group("deal_id").get(did, ())]
    live = sorted((r for r in rows if table.view_of(r) == "live"), key=lambda r: r["_seq"])
    return 200, b'{"success":true,"data":[' + b",".join(render_page(req, table, live)) + b"]}"


def variations(req: Req) -> tuple[int, bytes]:
    pid = req.path_id()
    products = req.company.t["products"]
    if products.get(pid) is None or products.view_of(products.rows[pid]) != "live":
        raise NotFound()
    return _grouped(req, "product_variations", "product_id", {pid}, lambda _: True)


def get_one(name: str) -> Handler:
    def handler(req: Req) -> tuple[int, bytes]:
        table = req.company.t[name]
        rec = table.get(req.path_id())
        if rec is None or not _revealed(req.company, name, rec):
            raise NotFound()
        opts = _render_options(req, name) or {
            "include": frozenset(),
            "only": None,
            "labels": False,
            "option_labels": False,
        }
        item = _items_with_options(req, table, [rec], opts)[0]
        if req.op.item_properties:  # the single-record schema can differ from the list's
            requested = frozenset(req.q.get("include_fields") or ()) | {"labels"}
            item = conform(item, req.op.item_properties, "v2", extras=requested)
        return 200, single(item)

    return handler


def _revealed(company: Company, name: str, rec: Record) -> bool:
    if name == "deals":
        return company.deal_revealed(rec)
    return company.t[name].view_of(rec) != "deleted"


def followers(name: str) -> Handler:
    """Followers of a record (`followers.py`): its owner, a second user for about half of the records, and
    those mutations added or removed."""

    def handler(req: Req) -> tuple[int, bytes]:
        company = req.company
        rid = req.path_id()
        if name == "users":
            if company.t["users"].get(rid) is None:
                raise NotFound()
            return 200, envelope([], None)
        rec = company.t[name].get(rid)
        if rec is None or not _revealed(company, name, rec):
            raise NotFound()
        return 200, _offset_list(req, followed_by.followers(company, name, rec))

    return handler


def _offset_list(req: Req, items: list[dict[str, Any]]) -> bytes:
    """Cursor paging over a small in-memory list (followers, fields): the cursor encodes an offset."""
    limit = page_limit(req.op, req.q)
    start = 0
    if req.q.get("cursor"):
        try:
            start = int(orjson.loads(base64.urlsafe_b64decode(req.q["cursor"] + "==="))["offset"])
        except (ValueError, KeyError, TypeError):
            raise BadRequest("Validation failed: cursor: Invalid cursor", "ERR_INVALID_CURSOR") from None
    page = items[start : start + limit]
    nxt = None
    if start + limit < len(items):
        nxt = base64.urlsafe_b64encode(orjson.dumps({"offset": start + limit})).rstrip(b"=").decode()
    return envelope([orjson.dumps(i) for i in page], nxt)


def fields_list(table: str) -> Handler:
    def handler(req: Req) -> tuple[int, bytes]:
        include = tuple(req.q.get("include_fields") or ())
        return 200, _offset_list(req, field_items(req.company, table, include))

    return handler


def field_one(table: str) -> Handler:
    """`/{entity}Fields/{field_code}`: one listed field definition."""

    def handler(req: Req) -> tuple[int, bytes]:
        include = tuple(req.q.get("include_fields") or ())
        for item in field_items(req.company, table, include):
            if item["field_code"] == req.path.get("field_code"):
                return 200, single(item)
        raise NotFound()

    return handler


def boards(req: Req) -> tuple[int, bytes]:
    return 200, _plain(req, "boards", None)


def phases(req: Req) -> tuple[int, bytes]:
    board_id = req.q["board_id"]
    return 200, _plain(req, "phases", lambda r: r["board_id"] == board_id)


def _plain(req: Req, name: str, keep: Callable[[Record], bool] | None) -> bytes:
    """Unpaginated v2 list (boards, phases): every live record by id, `additional_data: null`."""
    table = req.company.t[name]
    rows = [r for _, i in table.index("live", "id") for r in (table.rows[i],) if keep is None or keep(r)]
    return (
        b'{"success":true,"data":[' + b",".join(render_page(req, table, rows)) + b'],"additional_data":null}'
    )
