"""Per-deal lists computed from the deal itself: `/v1/deals/{id}/flow` and `/v1/deals/{id}/participants`.

Storing them for 100k deals would cost memory and generation time for data that is opt-in, so both
are derived on demand, deterministically:
- flow: a `dealChange` for the creation, one for the last stage change (when the deal has one), one for
  closing (won/lost), plus every change a mutation logged in `company.flow_log`; and the deal's
  activities, notes, files and mail messages (`flow_items.py`); newest first. A custom field's change is
  logged under the field's hash (and `<hash>_currency` / `<hash>_until` for a monetary field's currency
  and a range's end, as v1 records carry them) with the values as v1 renders them (an option's id, a
  set's "11,12"), and served only with `all_changes=1` (getDealUpdates: "If omitted returns changes
  without custom field updates"); snapshots and counts hold them (what the API can reveal);
- participants: the deal's contact person plus up to two more persons chosen from the deal id. Each item is
  a participation, as in the spec's examples (GetDealParticipants, AddDealParticipant): its own `id` (the
  `deal_participant_id` that DELETE takes, not the person's), the person as `person_id` {.., value} and
  as `person` (rendered as the person is now, so it follows person edits without the deal's `update_time`
  moving), `related_item_data` {deal_id, title} and `added_by_user_id`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .clock import v1_time
from .fields import flatten_v1
from .flow_items import linked_count, linked_items
from .org_relationships import related_organization
from .shape import HASH_KEY

if TYPE_CHECKING:
    from .company import Company
    from .store import Record


def _change(deal: Record, n: int, ts: int, key: str, old: Any, new: Any) -> dict[str, Any]:
    stamp = v1_time(ts)
    return {
        "object": "dealChange",
        "timestamp": stamp,
        "data": {
            "id": deal["id"] * 100 + n,
            "item_id": deal["id"],
            "user_id": deal["owner_id"],
            "field_key": key,
            "old_value": old,
            "new_value": new,
            "is_bulk_update_flag": None,
            "log_time": stamp,
            "change_source": "app",
            "change_source_user_agent": None,
            "additional_data": [],
        },
    }


def deal_flow(company: Company, deal: Record, all_changes: bool = True) -> list[dict[str, Any]]:
    events = [_change(deal, 1, deal["add_time"], "add_time", None, v1_time(deal["add_time"]))]
    if deal.get("stage_change_time"):
        events.append(_change(deal, 2, deal["stage_change_time"], "stage_id", None, deal["stage_id"]))
    if deal.get("close_time") and deal["status"] in ("won", "lost"):
        events.append(_change(deal, 3, deal["close_time"], "status", "open", deal["status"]))
    logged = company.flow_log.get(deal["id"], ())
    events.extend(logged if all_changes else [e for e in logged if not is_custom_change(e)])
    events.extend(linked_items(company, deal))
    # ids are unique per kind only: the kind breaks a tie of time and id
    events.sort(key=lambda e: (e["timestamp"], e["object"], e["data"]["id"]), reverse=True)
    return events


def flow_count(company: Company, deal: Record) -> int:
    """len(deal_flow(...)) without rendering the events (counts() runs it over every deal)."""
    closed = bool(deal.get("close_time")) and deal["status"] in ("won", "lost")
    changes = 1 + bool(deal.get("stage_change_time")) + closed + len(company.flow_log.get(deal["id"], ()))
    return changes + linked_count(company, deal)


def participant_count(company: Company, deal: Record) -> int:
    return len(_participant_ids(company, deal))


def log_change(company: Company, deal: Record, key: str, old: Any, new: Any) -> None:
    """Record a mutation's field change in the deal's flow."""
    log = company.flow_log.setdefault(deal["id"], [])
    ev = _change(deal, 0, company.clock, key, old, new)
    ev["data"]["id"] = 10_000_000_000 + company.next_change_id()
    log.append(ev)


# a custom field's value as v1 records carry it: the field's hash, plus these siblings of composite values
# (the address parts are not logged: the hash's formatted address changes with them)
LOGGED_SIBLINGS = ("", "_currency", "_until")


def log_custom_changes(company: Company, deal: Record, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Record a mutation's changes of the deal's custom fields (`old`/`new`: `custom_fields` before and
    after) in its flow, one `dealChange` per v1 key whose value changed."""
    for fd in company.fields.custom("deal"):
        before, after = dict(flatten_v1(fd, old.get(fd.code))), dict(flatten_v1(fd, new.get(fd.code)))
        for key in (fd.code + suffix for suffix in LOGGED_SIBLINGS):
            if (key in before or key in after) and before.get(key) != after.get(key):
                log_change(company, deal, key, before.get(key), after.get(key))


def is_custom_change(event: dict[str, Any]) -> bool:
    """Whether a logged change is a custom field's (its key is the field's 40-hex hash, or a sibling)."""
    return HASH_KEY.match(event["data"]["field_key"]) is not None


def _participant_ids(company: Company, deal: Record) -> list[int]:
    ids = [deal["person_id"]] if deal.get("person_id") else []
    h = int(hashlib.md5(f"{company.seed}/participants/{deal['id']}".encode()).hexdigest()[:8], 16)
    n_persons = company.participant_pool
    for k in range(h % 3):
        pid = 1 + (h >> (4 + 8 * k)) % n_persons
        while pid in company.merged_into:  # a merge hands its participations to the person kept
            pid = company.merged_into[pid]
        if pid not in ids:
            ids.append(pid)
    persons = company.t["persons"].rows
    return [p for p in ids if p in persons and not persons[p]["is_deleted"]]


def _user(users: dict[Any, Record], uid: Any) -> dict[str, Any] | None:
    user = users.get(uid)
    return None if user is None else {**_related_user(user), "value": user["id"]}


def _related_user(user: Record) -> dict[str, Any]:
    """`userDataWithId`: a user as related_objects shows it (`added_by_user_id`, `owner_id` add `value`)."""
    return {
        "id": user["id"],
        "name": user["name"],
        "email": user["email"],
        "has_pic": 0,
        "pic_hash": None,
        "active_flag": user["active_flag"],
    }


def _person(company: Company, person: Record) -> dict[str, Any]:
    users = company.t["users"].rows
    owner = users.get(person["owner_id"])
    org = company.t["organizations"].get(person["org_id"]) if person.get("org_id") else None
    item: dict[str, Any] = {
        "id": person["id"],
        "company_id": 1,
        "active_flag": True,
        "phone": person["phones"],
        "email": person["emails"],
        "first_char": person["name"][:1].lower(),
        "add_time": v1_time(person["add_time"]),
        "update_time": v1_time(person["update_time"]),
        "visible_to": str(person["visible_to"]),
        "owner_name": owner["name"] if owner else "",
        "name": person["name"],
        "first_name": person["first_name"],
        "last_name": person["last_name"],
        "owner_id": _user(users, person["owner_id"]),
    }
    if org:
        item["org_name"] = org["name"]
        item["org_id"] = {
            "name": org["name"],
            "people_count": 1,
            "owner_id": org["owner_id"],
            "address": (org["address"] or {}).get("value") or "",
            "cc_email": "",
            "value": org["id"],
            "active_flag": not org["is_deleted"],
        }
    return item


def participation_id(company: Company, deal_id: int, person_id: int) -> int:
    """A participation's own id: stable per (deal, person), unrelated to either id (below 2**48)."""
    key = f"{company.seed}/participation/{deal_id}/{person_id}"
    return int(hashlib.md5(key.encode()).hexdigest()[:12], 16)


def participant_item(company: Company, deal: Record, person: Record) -> dict[str, Any]:
    return {
        "id": participation_id(company, deal["id"], person["id"]),
        "person_id": {
            "active_flag": True,
            "name": person["name"],
            "email": person["emails"],
            "phone": person["phones"],
            "value": person["id"],
        },
        "add_time": v1_time(max(deal["add_time"], person["add_time"])),
        "active_flag": True,
        "related_item_data": {"deal_id": deal["id"], "title": deal["title"]},
        "person": _person(company, person),
        "added_by_user_id": _user(company.t["users"].rows, deal["owner_id"]),
        "related_item_type": "deal",
        "related_item_id": deal["id"],
    }


def deal_participants(company: Company, deal: Record) -> list[dict[str, Any]]:
    persons = company.t["persons"].rows
    return [participant_item(company, deal, persons[p]) for p in _participant_ids(company, deal)]


def related_objects(company: Company, deal: Record, kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """`related_objects` of a page of the deal's flow or participants, as their responses declare it: the
    users, persons and organizations (and for the flow, deals: the deal itself and any an item names) the
    page's items refer to, each keyed by its id, in the shapes the spec's examples give them."""
    refs: dict[str, set[int]] = {"user": set(), "person": set(), "organization": set(), "deal": set()}
    if kind == "flow":
        refs["deal"].add(deal["id"])
        for item in items:
            data = item["data"]
            for key, name in (("user_id", "user"), ("person_id", "person"), ("org_id", "organization")):
                if type(data.get(key)) is int:
                    refs[name].add(data[key])
            if type(data.get("deal_id")) is int:
                refs["deal"].add(data["deal_id"])
    else:
        for item in items:
            person = item["person"]
            refs["person"].add(item["person_id"]["value"])
            refs["user"].update(u["id"] for u in (item["added_by_user_id"], person["owner_id"]) if u)
            if person.get("org_id"):
                refs["organization"].add(person["org_id"]["value"])
        del refs["deal"]  # GetDealParticipants' related_objects has users, organizations and persons only
    render: dict[str, tuple[str, Callable[[Record], dict[str, Any]]]] = {
        "user": ("users", _related_user),
        "person": ("persons", _related_person),
        "organization": ("organizations", lambda r: related_organization(company, r)),
        "deal": ("deals", _related_deal),
    }
    out = {}
    for name, ids in refs.items():
        table, shape = render[name]
        rows = company.t[table].rows
        out[name] = {str(i): shape(rows[i]) for i in sorted(ids) if i in rows}
    return out


def _related_person(person: Record) -> dict[str, Any]:
    return {
        "active_flag": not person["is_deleted"],
        "id": person["id"],
        "name": person["name"],
        "email": person["emails"],
        "phone": person["phones"],
        "owner_id": person["owner_id"],
    }


def _related_deal(deal: Record) -> dict[str, Any]:
    keys = ("id", "title", "status", "value", "currency", "stage_id", "pipeline_id")
    return {k: deal[k] for k in keys}


def snapshot_derived(company: Company, table: str) -> list[dict[str, Any]]:
    """All flow entries / participants of every not-deleted deal, each tagged with its `deal_id`."""
    make = deal_flow if table == "deal_flow" else deal_participants
    out = []
    deals = company.t["deals"].rows
    for did in sorted(deals):
        deal = deals[did]
        if deal["is_deleted"]:
            continue
        for item in make(company, deal):
            out.append({"deal_id": did, **item})
    return out
