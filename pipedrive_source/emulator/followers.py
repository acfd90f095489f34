"""Followers of deals, persons, organizations and products: `/api/v2/{entity}/{id}/followers`.

A record's followers are derived, as most of its users would have it: its owner, plus a second user for
about half of the records (from the seed and the id), each following since the record was added; storing
them for every record would cost memory for an opt-in list. A mutation's `follow` / `unfollow` op
(`{"op": "follow", "table": "deals", "id": 7, "user_id": 3}`) adds or removes one, kept in
`company.follows` on top of the derived ones, and stamps the record: its `followers_count` (an
`include_fields` field of each of the four lists) changes, and the emulator stamps a record whose counts of
related items change (as a deal's products or activities do). A merge of two persons or organizations
hands the followers of the one merged away to the one kept (`move`).

GetFollowersResponse's items are `user_id` and `add_time` (RFC3339), oldest user id first; pages are
cursor-paged (`limit` 1..500, default 100). Snapshots tag each item with its record's id column.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from .clock import rfc3339

if TYPE_CHECKING:
    from .company import Company
    from .store import Record

# followed table -> (snapshot table, the column naming the followed record)
FOLLOWED: dict[str, tuple[str, str]] = {
    "deals": ("deal_followers", "deal_id"),
    "persons": ("person_followers", "person_id"),
    "organizations": ("organization_followers", "org_id"),
    "products": ("product_followers", "product_id"),
}
TABLES: dict[str, str] = {table: followed for followed, (table, _) in FOLLOWED.items()}


def followers(company: Company, name: str, rec: Record) -> list[dict[str, Any]]:
    """The followers of `rec` (a record of `name`), by user id."""
    since = _since(company, name, rec)
    return [{"user_id": user, "add_time": rfc3339(since[user])} for user in sorted(since)]


def _since(company: Company, name: str, rec: Record) -> dict[int, int]:
    """Each follower of `rec` and the emulator time it started following."""
    since = {rec["owner_id"]: rec["add_time"]}
    h = int(hashlib.md5(f"{company.seed}/followers/{name}/{rec['id']}".encode()).hexdigest()[:6], 16)
    if h % 2:
        since.setdefault(1 + h % len(company.t["users"]), rec["add_time"])
    for user, added in company.follows.get((name, rec["id"]), {}).items():
        if added is None:
            since.pop(user, None)
        else:
            since[user] = added
    return since


def change(company: Company, name: str, rec: Record, user_id: Any, follow: bool) -> None:
    """Add (`follow`) or remove a follower of `rec`; the caller stamps the record."""
    if name not in FOLLOWED:
        raise ValueError(f"{name} has no followers")
    user = int(user_id)
    following = any(f["user_id"] == user for f in followers(company, name, rec))
    if follow == following:
        state = "already follows" if follow else "does not follow"
        raise ValueError(f"user {user} {state} {name} {rec['id']}")
    if follow and company.t["users"].get(user) is None:
        raise ValueError(f"no user {user}")
    company.follows.setdefault((name, rec["id"]), {})[user] = company.clock if follow else None


def move(company: Company, name: str, gone: Record, kept: Record) -> None:
    """A merge hands `gone`'s followers to `kept` ("all related data (... followers, participants)" moves,
    in Pipedrive's merge tutorials). A user following both keeps `kept`'s follow; a moved follow keeps the
    time it started, as the user did not follow anew. The caller stamps `kept` (its followers_count)."""
    if name not in FOLLOWED:
        return
    theirs, ours = _since(company, name, gone), _since(company, name, kept)
    moved = {user: added for user, added in theirs.items() if user not in ours}
    if moved:
        company.follows.setdefault((name, kept["id"]), {}).update(moved)


def snapshot(company: Company, table: str) -> list[dict[str, Any]]:
    """Every follower of every record the API reveals, tagged with the record's id column."""
    name = TABLES[table]
    column = FOLLOWED[name][1]
    revealed = company.revealed(name)
    return [{column: rec["id"], **item} for rec in revealed for item in followers(company, name, rec)]
