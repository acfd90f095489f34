"""Organization relationships: `/v1/organizationRelationships?org_id=` (getOrganizationRelationships).

Stored (`organization_relationships`, generated for about one organization in ten) as `{id, type,
rel_owner_org_id, rel_linked_org_id, add_time, update_time, is_deleted}` with the two organizations' ids;
served per organization as the spec's `organizationRelationshipDetails`: both organizations as
`relationshipOrganizationInfoItem` objects (name, people_count, owner_id, address, cc_email, `value` = id,
and `active_flag` as the example shows, rendered as the organizations are now; no address where an
organization has none, the schema's being a string that is not nullable), the times in v1's format,
`active_flag` as the string the schema declares, and the view from the organization asked for:
`calculated_type` (`parent` / `daughter` of a parent relationship from either side, `related` otherwise),
`calculated_related_org_id` and `related_organization_name` (the other organization). A relationship is
listed under both of its organizations, while both are live.

The operation takes `org_id` only (required): every relationship at once, with the schema's flat
`additional_data` {start, limit, more_items_in_collection} and `related_objects.organization` keyed by
organization id. The spec documents only the 200 response: an unknown or deleted organization gets an empty
list. Relationships are changed through the generic mutation ops (`create` with `values` naming both
organizations, `update`, `delete`); the spec does not say that this stamps the organizations, so the emulator
leaves them alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .clock import v1_time
from .params import BadRequest

if TYPE_CHECKING:
    from .company import Company
    from .routes_v2 import Req
    from .store import Record

TABLE = "organization_relationships"
ENDS = ("rel_owner_org_id", "rel_linked_org_id")


def relationships(company: Company, org_id: Any) -> list[dict[str, Any]]:
    """The relationships of organization `org_id` as it sees them, oldest id first."""
    orgs = company.t["organizations"]
    org = orgs.get(org_id)
    if org is None or orgs.view_of(org) != "live":
        return []
    table = company.t[TABLE]
    ids = {i for end in ENDS for i in table.group(end).get(org_id, ())}
    items = []
    for rid in sorted(ids):
        rel = table.rows[rid]
        ends = [orgs.get(rel[end]) for end in ENDS]
        if table.view_of(rel) != "live" or any(e is None or orgs.view_of(e) != "live" for e in ends):
            continue
        items.append(_item(company, rel, org_id))
    return items


def _item(company: Company, rel: Record, org_id: Any) -> dict[str, Any]:
    owner, linked = (company.t["organizations"].rows[rel[end]] for end in ENDS)
    mine = owner["id"] == org_id
    other = linked if mine else owner
    # the other organization as `org_id` sees it (the example: a parent's owner sees its linked one as its
    # "daughter")
    calculated = rel["type"]
    if calculated == "parent":
        calculated = "daughter" if mine else "parent"
    return {
        "id": rel["id"],
        "type": rel["type"],
        "rel_owner_org_id": info(company, owner),
        "rel_linked_org_id": info(company, linked),
        "add_time": v1_time(rel["add_time"]),
        "update_time": v1_time(rel["update_time"]),
        "active_flag": "true",
        "calculated_type": calculated,
        "calculated_related_org_id": other["id"],
        "related_organization_name": other["name"],
    }


def info(company: Company, org: Record) -> dict[str, Any]:
    """`relationshipOrganizationInfoItem` of an organization (and `active_flag`, as the example has)."""
    persons = company.t["persons"]
    members = persons.group("org_id").get(org["id"], ())
    people = sum(1 for p in members if persons.view_of(persons.rows[p]) == "live")
    address = org.get("address")
    if isinstance(address, dict):
        address = address.get("value")
    item = {
        "name": org["name"],
        "people_count": people,
        "owner_id": org["owner_id"],
        "address": address,
        "active_flag": True,
        "cc_email": f"org-{org['id']}@pipedrivemail.com",
        "value": org["id"],
    }
    if address is None:  # the schema's address is a string, not nullable: left out where there is none
        del item["address"]
    return item


def related_organization(company: Company, org: Record) -> dict[str, Any]:
    """The organization as `related_objects.organization` lists it: `info` keyed by `id`, not `value`."""
    return {"id": org["id"], **{k: v for k, v in info(company, org).items() if k != "value"}}


def handler(req: Req) -> tuple[int, bytes]:
    org_id = req.q.get("org_id")
    if org_id is None:
        raise BadRequest("Validation failed: org_id: Required parameter 'org_id' is missing")
    items = relationships(req.company, org_id)
    orgs = req.company.t["organizations"].rows
    related = {
        str(i): related_organization(req.company, orgs[i])
        for i in sorted({item[end]["value"] for item in items for end in ENDS})
    }
    body = {
        "success": True,
        "data": items,
        "additional_data": {"start": 0, "limit": max(100, len(items)), "more_items_in_collection": False},
        "related_objects": {"organization": related},
    }
    return 200, orjson.dumps(body)


def snapshot(company: Company) -> list[dict[str, Any]]:
    """Every relationship of every live organization as that organization sees it, tagged `org_id`."""
    live = company.revealed("organizations")
    return [{"org_id": org["id"], **item} for org in live for item in relationships(company, org["id"])]
