"""Handlers of the API v1 endpoints the connector reads.

Envelopes follow each endpoint's v1 response schema (`paged_body` reads it): `additional_data.pagination`
{start, limit, more_items_in_collection} for notes, files, call logs and roles, with `next_start` for notes
and files only (the others' schemas have none); the flat `additional_data`
{start, limit, more_items_in_collection} for leads and the per-deal flow/participants lists (which add the
page's `related_objects`: `derived.related_objects`); no
`additional_data` for the unpaginated lookup lists (users, activity types, currencies, filters, lead labels,
lead sources, permission sets, legacy teams), `data.goals` for `/goals/find`, and one object for `/users/me`
(the token's user with its company's id, name and domain: each emulated company is told apart by its seed).

v1 ordering and filters:
- leads (+ archived): oldest first by creation unless `sort` says otherwise; `owner_id`, `person_id`,
  `organization_id` filters; archived leads only on `/leads/archived`;
  `filter_id` is accepted (it is in the spec) but not emulated, as in v2: the list comes unfiltered;
- notes: by id unless `sort`; `user_id`, `deal_id`, `person_id`, `org_id`, `lead_id`, `project_id`,
  `pinned_to_*_flag`, and `start_date`/`end_date` (inclusive dates on `add_time`);
- `sort` honours its first `field ASC|DESC` pair, ties broken by id;
- a deal's flow lists custom field changes only with `all_changes=1` (0 or none: without them), and only
  the kinds of update `items` names when given (`FLOW_ITEMS`);
- `limit` as the spec states it (`paging.page_limit`): above a stated maximum (files 100, call logs 50)
  a 400; where none is stated, at most 500 are served and the envelope reports that limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson

from . import render
from .clock import DAY, parse_date
from .derived import deal_flow, deal_participants, related_objects
from .fieldsapi import field_items
from .paging import offset_page, page_limit
from .params import BadRequest, NotFound
from .routes_v2 import Req
from .spec import Operation
from .store import Record, Table

V1_EQ = ("owner_id", "person_id", "organization_id", "user_id", "deal_id", "org_id", "lead_id", "project_id")
PIN_FLAGS = (
    "pinned_to_lead_flag",
    "pinned_to_deal_flag",
    "pinned_to_organization_flag",
    "pinned_to_person_flag",
    "pinned_to_project_flag",
)


def _start(req: Req) -> int:
    start = req.q.get("start", 0)
    if start < 0:
        raise BadRequest("Validation failed: start: must not be negative")
    return start


def paged_body(
    op: Operation, items: list[bytes], start: int, limit: int, more: bool, related: dict | None = None
) -> bytes:
    """A v1 page with the `additional_data` its response schema declares: the pagination nested under
    `pagination` or flat, with `next_start` (when more follow) only where the schema has it; and the page's
    `related_objects` where the schema has them."""
    declared = ((op.envelope or {}).get("additional_data") or {}).get("properties") or {}
    nested = "pagination" in declared
    pagination: dict[str, Any] = {"start": start, "limit": limit, "more_items_in_collection": more}
    if nested and more and "next_start" in (declared["pagination"].get("properties") or {}):
        pagination["next_start"] = start + limit
    extra = {"pagination": pagination} if nested else pagination
    tail = b"}" if related is None else b',"related_objects":' + orjson.dumps(related) + b"}"
    return b"".join(
        (b'{"success":true,"data":[', b",".join(items), b'],"additional_data":', orjson.dumps(extra), tail)
    )


def _keep(req: Req) -> Callable[[Record], bool] | None:
    q = req.q
    checks: list[Callable[[Record], bool]] = []
    for name in (*V1_EQ, *PIN_FLAGS):
        if name in q:
            want = bool(q[name]) if name in PIN_FLAGS else q[name]
            checks.append(lambda r, k=name, v=want: r.get(k) == v)
    for name, after in (("start_date", True), ("end_date", False)):
        if name in q:
            day = parse_date(q[name])
            if day is None:
                raise BadRequest(f"Validation failed: {name}: expected YYYY-MM-DD")
            checks.append(
                (lambda r, d=day: r["add_time"] >= d) if after else (lambda r, d=day: r["add_time"] < d + DAY)
            )
    return (lambda r: all(c(r) for c in checks)) if checks else None


def _stream(table: Table, view: str, req: Req, default_sort: str) -> Iterator[Record]:
    pairs = req.q.get("sort") or [(default_sort, "ASC")]
    field, direction = pairs[0]
    ix = table.index(view, field)
    rows = table.rows
    seq = reversed(ix) if direction == "DESC" else iter(ix)
    return (rows[i] for _, i in seq)


def v1_list(name: str, view: str = "live", default_sort: str = "id") -> Callable[[Req], tuple[int, bytes]]:
    def handler(req: Req) -> tuple[int, bytes]:
        table = req.company.t[name]
        start, limit = _start(req), page_limit(req.op, req.q)
        keep = _keep(req)
        stream = _stream(table, view, req, default_sort)
        if keep is not None:
            stream = (r for r in stream if keep(r))
        page, more = offset_page(stream, start, limit)
        items = [render.record_bytes(req.company, table, r, "v1") for r in page]
        return 200, paged_body(req.op, items, start, limit, more)

    return handler


def v1_all(name: str, keep_param: str | None = None) -> Callable[[Req], tuple[int, bytes]]:
    """Unpaginated lookup list: every live record by id (optionally filtered by one parameter)."""

    def handler(req: Req) -> tuple[int, bytes]:
        table = req.company.t[name]
        want = req.q.get(keep_param) if keep_param else None
        rows = (table.rows[i] for _, i in table.index("live", "id"))
        if want is not None:
            field = {"app": "app", "type": "type", "term": "code"}[keep_param]
            rows = (r for r in rows if _matches(r.get(field), want, keep_param == "term"))
        items = [render.record_bytes(req.company, table, r, "v1") for r in rows]
        return 200, b'{"success":true,"data":[' + b",".join(items) + b"]}"

    return handler


def _matches(value: Any, want: Any, fuzzy: bool) -> bool:
    return want.lower() in str(value).lower() if fuzzy else value == want


def currencies(req: Req) -> tuple[int, bytes]:
    term = (req.q.get("term") or "").lower()
    table = req.company.t["currencies"]
    rows = [r for r in table.in_view("live") if term in r["code"].lower() or term in r["name"].lower()]
    items = [render.record_bytes(req.company, table, r, "v1") for r in sorted(rows, key=lambda r: r["id"])]
    return 200, b'{"success":true,"data":[' + b",".join(items) + b"]}"


# getGoals' filters whose description says "If provided, everyone's goals will be returned"; without one of
# them (or `assignee.id`: "When omitted, only your goals will be returned") a user sees the goals assigned to
# them only (a test holds this list to the spec's descriptions)
EVERYONES_GOALS = frozenset(
    {
        "type.name",
        "assignee.type",
        "expected_outcome.target",
        "expected_outcome.tracking_metric",
        "expected_outcome.currency_id",
        "type.params.pipeline_id",
        "type.params.stage_id",
        "type.params.activity_type_id",
    }
)


def goals(req: Req) -> tuple[int, bytes]:
    """`/goals/find` (getGoals): each filter names the goal's attribute it compares by its dotted path
    (`assignee.id` is the goal's `assignee.id`); `is_active` defaults to true; the array filters
    (`type.params.pipeline_id`, `type.params.activity_type_id`) match a goal with the same set of ids;
    `period.start`..`period.end` (inclusive dates; `period.end` alone: up to it) selects the goals whose
    duration overlaps that period. Without `assignee.id` or a filter of `EVERYONES_GOALS`, only the goals
    assigned to the credentials' user."""
    table = req.company.t["goals"]
    rows = sorted(table.in_view("live"), key=lambda r: r["id"])  # a deleted goal leaves the list
    q = {**{n: p.default for n, p in req.op.params.items() if p.default is not None}, **req.q}
    if "assignee.id" not in q and not EVERYONES_GOALS & q.keys():
        q.update({"assignee.id": _you(req.company)["id"], "assignee.type": "person"})
    period = _goal_period(q.pop("period.start", None), q.pop("period.end", None))
    rows = [r for r in rows if all(_goal_has(r, name, want) for name, want in q.items())]
    if period is not None:
        start, end = period
        rows = [r for r in rows if r["duration"]["start"] <= end and (r["duration"]["end"] or end) >= start]
    items = [render.record_bytes(req.company, table, r, "v1") for r in rows]
    return 200, b'{"success":true,"data":{"goals":[' + b",".join(items) + b"]}}"


def _goal_has(goal: Record, name: str, want: Any) -> bool:
    value: Any = goal
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(want, list):  # "An array of pipeline IDs": the goal's own array, in any order
        return isinstance(value, list) and sorted(value) == sorted(want)
    return value == want


def _goal_period(start: str | None, end: str | None) -> tuple[str, str] | None:
    """The period asked for, as dates. The spec: "When `period.start` is provided, `period.end` must be
    provided too" (a 400 otherwise, as a malformed date is); `period.end` alone has no lower bound."""
    if end is None:
        if start is not None:
            raise BadRequest("Validation failed: period.end: required when period.start is provided")
        return None
    for name, day in (("period.start", start), ("period.end", end)):
        if day is not None and parse_date(day) is None:
            raise BadRequest(f"Validation failed: {name}: expected YYYY-MM-DD")
    return start or "0000-01-01", end


def legacy_teams(req: Req) -> tuple[int, bytes]:
    """`/legacyTeams` (getTeams): every team at once, sorted by `order_by` (default id, ties by id); a
    deleted team leaves the list; `skip_users=1` leaves out each team's member ids."""
    table = req.company.t["teams"]
    rows = [table.rows[i] for _, i in table.index("live", req.q.get("order_by", "id"))]
    items = [render.record_bytes(req.company, table, r, "v1") for r in rows]
    if req.q.get("skip_users"):
        items = [orjson.dumps({k: v for k, v in orjson.loads(i).items() if k != "users"}) for i in items]
    return 200, b'{"success":true,"data":[' + b",".join(items) + b"]}"


def fields_list(table: str) -> Callable[[Req], tuple[int, bytes]]:
    """`/v1/noteFields`, `/v1/leadFields`: every definition at once, flat additional_data."""

    def handler(req: Req) -> tuple[int, bytes]:
        items = [orjson.dumps(i) for i in field_items(req.company, table)]
        return 200, paged_body(req.op, items, 0, len(items), False)

    return handler


def per_deal(kind: str) -> Callable[[Req], tuple[int, bytes]]:
    """`/deals/{id}/flow` and `/deals/{id}/participants` (start/limit, flat additional_data)."""

    def make(req: Req, deal: Record) -> list[dict[str, Any]]:
        if kind == "flow":
            keep = _flow_items(req)
            flow = deal_flow(req.company, deal, _all_changes(req))
            return flow if keep is None else [i for i in flow if keep(i)]
        return deal_participants(req.company, deal)

    def handler(req: Req) -> tuple[int, bytes]:
        deal = req.company.t["deals"].get(req.path_id())
        if deal is None or deal["is_deleted"]:
            raise NotFound()
        start, limit = _start(req), page_limit(req.op, req.q)
        items, more = offset_page(iter(make(req, deal)), start, limit)
        related = related_objects(req.company, deal, kind, items)
        return 200, paged_body(req.op, [orjson.dumps(i) for i in items], start, limit, more, related)

    return handler


def _all_changes(req: Req) -> bool:
    """getDealUpdates' `all_changes`: "1 = Include custom field changes. If omitted returns changes without
    custom field updates". Its schema is a bare string, so the emulator holds it to what the description
    gives a meaning: 1, or 0 for the default; anything else is a 400, as a value outside an enum."""
    raw = req.q.get("all_changes")
    if raw is not None and raw not in ("0", "1"):
        raise BadRequest("Validation failed: all_changes: must be one of 0, 1")
    return raw == "1"


def _activity(item: dict[str, Any]) -> bool:
    return item["object"] == "activity"


# getDealUpdates' `items`: "A comma-separated string for filtering out item specific updates": the flow
# narrowed to the kinds of update named (read as picking them out, not as leaving them out: a client names
# what it wants to see). A value names the flow items of its `object` (`dealChange`, `note`, ...), except:
# `change` names every field change, `plannedActivity` the activities not done yet, `call` the activities of
# type call, `mailMessageWithAttachment` the mails with attachments. The kinds the emulator never lists
# (followers, invoices, ...) select nothing.
FLOW_ITEMS: dict[str, Callable[[dict[str, Any]], bool]] = {
    **{
        name: (lambda item, n=name: item["object"] == n)
        for name in (
            "activity",
            "note",
            "deal",
            "file",
            "dealChange",
            "personChange",
            "organizationChange",
            "follower",
            "dealFollower",
            "personFollower",
            "organizationFollower",
            "participant",
            "comment",
            "mailMessage",
            "invoice",
            "document",
            "marketing_campaign_stat",
            "marketing_status_change",
        )
    },
    "change": lambda item: item["object"].endswith("Change"),
    "plannedActivity": lambda item: _activity(item) and not item["data"]["done"],
    "call": lambda item: _activity(item) and item["data"]["type"] == "call",
    "mailMessageWithAttachment": lambda item: (
        item["object"] == "mailMessage" and bool(item["data"]["attachments"])
    ),
}


def _flow_items(req: Req) -> Callable[[dict[str, Any]], bool] | None:
    """What `items` keeps (None: no filter); a value the description does not list is a 400, as a value
    outside an enum."""
    names = [n.strip() for n in (req.q.get("items") or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in FLOW_ITEMS]
    if unknown:
        raise BadRequest(f"Validation failed: items: '{unknown[0]}' must be one of {', '.join(FLOW_ITEMS)}")
    if not names:
        return None
    tests = [FLOW_ITEMS[n] for n in names]
    return lambda item: any(t(item) for t in tests)


def current_user(req: Req) -> tuple[int, bytes]:
    """`/v1/users/me`: the credentials' user (`is_you`) plus its company's data (GetCurrentUser)."""
    me = _you(req.company)
    user = orjson.loads(render.record_bytes(req.company, req.company.t["users"], me, "v1"))
    return 200, orjson.dumps({"success": True, "data": {**user, **company_data(req.company.seed)}})


def _you(company: Any) -> Record:
    """The credentials' user (`is_you`)."""
    table = company.t["users"]
    me = next((r for _, i in table.index("live", "id") if (r := table.rows[i]).get("is_you")), None)
    if me is None:
        raise NotFound()
    return me


def company_data(seed: int) -> dict[str, Any]:
    """The company part of `/users/me`; deterministic per seed (the second company is seed + 1)."""
    return {
        "company_id": 7_000_000 + seed,
        "company_name": f"Emulated Company {seed}",
        "company_domain": f"emulated-{seed}",
        "company_country": "EE",
        "company_industry": "IT Services",
        "language": {"language_code": "en", "country_code": "US"},
    }
