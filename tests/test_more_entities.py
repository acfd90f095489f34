"""Project templates (v2), legacy teams (v1, members as `teams__users`), the opt-in deal discounts (v2, one
request per changed deal), followers of deals, persons, organizations and products (v2) and organization
relationships (v1, one request per changed organization) against the emulator: a sync loads what the
emulator holds (row by row, child tables included), a run without changes costs at most one request per
entity, and deletes reach the warehouse the way the API shows them (a template or team leaves its list:
flagged; a discount or follower leaves its parent's list: the parent's rows are replaced when it is read
again; a relationship too, and a reconcile reads every organization's)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from connector_fixtures import assert_equal_to_truth, sync, synced_rows

from pipedrive_source.entities import BY_NAME, DEFAULT_ENTITIES

LISTS = ["project_templates", "teams"]
DISCOUNTS = ["deals", "deal_discounts"]
PATHS = {
    "project_templates": "/api/v2/projectTemplates",
    "teams": "/v1/legacyTeams",
    "deal_discounts": "/api/v2/deals/{id}/discounts",
}
COSTS = {"project_templates": 10, "teams": 20}  # x-token-cost of their list operations
COMPANY_CHECK = "/v1/users/me"  # which company the token belongs to: one request a run, whatever is read


def test_templates_and_teams_load_what_the_emulator_holds_and_cost_one_request_a_run(
    emulator, tmp_path: Path
) -> None:
    first = sync(emulator, tmp_path, entities=LISTS)
    assert first.loaded["project_templates"] == len(emulator.control.snapshot("project_templates"))
    assert first.loaded["teams"] == len(emulator.control.snapshot("teams"))
    assert first.loaded["teams__users"] == sum(len(t["users"]) for t in emulator.control.snapshot("teams"))
    assert_equal_to_truth(emulator, tmp_path, LISTS)

    again = sync(emulator, tmp_path, entities=LISTS)
    assert again.loaded == {} and again.flagged == {}
    stats = again.emulator_stats
    requests = {path: n for path, n in stats["requests"].items() if path != COMPANY_CHECK}
    assert requests == {PATHS[t]: 1 for t in LISTS}
    assert {path: stats["tokens"][path] for path in requests} == {PATHS[t]: c for t, c in COSTS.items()}


def test_a_deleted_template_or_team_is_flagged_and_a_changed_team_reloads_its_members(
    emulator, tmp_path: Path
) -> None:
    sync(emulator, tmp_path, entities=LISTS)
    template = max(row["id"] for row in emulator.control.snapshot("project_templates"))
    team = min(emulator.control.snapshot("teams"), key=lambda t: t["id"])
    members = [*team["users"][1:], 99]  # one member leaves, another joins
    emulator.control.mutate(
        ops=[
            {"op": "delete", "table": "project_templates", "id": template},
            {"op": "update", "table": "teams", "id": team["id"], "changes": {"users": members}},
        ]
    )
    result = sync(emulator, tmp_path, entities=LISTS)
    assert result.flagged == {"project_templates": 1}
    assert result.loaded == {"teams": 1, "teams__users": len(members)}
    templates = {row["id"]: row for row in synced_rows(result.pipeline, "project_templates")}
    assert templates[template]["is_deleted"] is True
    assert_equal_to_truth(emulator, tmp_path, LISTS)


def test_deal_discounts_load_for_changed_deals_and_follow_their_changes(emulator, tmp_path: Path) -> None:
    first = sync(emulator, tmp_path, entities=["deal_discounts"])  # pulls in deals, its parent
    synced = synced_rows(first.pipeline, "deal_discounts")
    assert len(synced) == len(emulator.control.snapshot("deal_discounts")) > 0
    assert_equal_to_truth(emulator, tmp_path, DISCOUNTS)

    quiet = sync(emulator, tmp_path, entities=["deal_discounts"])
    assert quiet.loaded == {} and PATHS["deal_discounts"] not in quiet.emulator_stats["requests"]

    discounts = emulator.control.snapshot("deal_discounts")
    gone, edited = discounts[0], discounts[1]
    changes = emulator.control.mutate(
        ops=[
            {"op": "delete", "table": "deal_discounts", "id": gone["id"]},
            {"op": "update", "table": "deal_discounts", "id": edited["id"], "changes": {"amount": 12.5}},
            {"op": "create", "table": "deal_discounts"},
        ]
    )
    stamped = set(changes["updated"]["deals"])
    assert {gone["deal_id"], edited["deal_id"]} <= stamped  # a discount's change stamps its deal
    result = sync(emulator, tmp_path, entities=["deal_discounts"])
    assert result.emulator_stats["requests"][PATHS["deal_discounts"]] == len(stamped)  # one per changed deal
    rows = {row["id"]: row for row in synced_rows(result.pipeline, "deal_discounts")}
    assert gone["id"] not in rows  # its deal's set was replaced
    assert rows[edited["id"]]["amount"] == 12.5
    truth = {row["id"]: row for row in emulator.control.snapshot("deal_discounts")}
    assert truth[edited["id"]]["updated_at"] == changes["clock"] != edited["updated_at"]  # stamped
    assert changes["created"]["deal_discounts"][0] in rows
    assert_equal_to_truth(emulator, tmp_path, DISCOUNTS)


# ---- opt-in followers and organization relationships ----------------------------------------------------

FOLLOWERS = {  # table -> (parent, the column naming the followed record)
    "deal_followers": ("deals", "deal_id"),
    "person_followers": ("persons", "person_id"),
    "organization_followers": ("organizations", "org_id"),
    "product_followers": ("products", "product_id"),
}
RELATIONSHIPS = "organization_relationships"
RELATIONSHIPS_PATH = "/v1/organizationRelationships"


def _followers_path(parent: str) -> str:
    return f"/api/v2/{parent}/{{id}}/followers"


def test_new_per_record_entities_are_opt_in() -> None:
    """A default sync reads none of them (its requests and tokens stay what they were)."""
    for name in [*FOLLOWERS, RELATIONSHIPS]:
        assert BY_NAME[name].opt_in and name not in DEFAULT_ENTITIES


def test_followers_load_per_changed_record_and_follow_its_changes(emulator, tmp_path: Path) -> None:
    tables = [*FOLLOWERS, *(parent for parent, _ in FOLLOWERS.values())]
    first = sync(emulator, tmp_path, entities=list(FOLLOWERS))  # pulls in their parents
    stats = first.emulator_stats
    for table, (parent, column) in FOLLOWERS.items():
        parents = emulator.control.snapshot(parent)
        # one request of 10 tokens per record read (each record's followers fit one page of 500)
        assert stats["requests"][_followers_path(parent)] == len(parents), table
        assert stats["tokens"][_followers_path(parent)] == 10 * len(parents), table
        assert {r[column] for r in synced_rows(first.pipeline, table)} <= {p["id"] for p in parents}
    assert_equal_to_truth(emulator, tmp_path, tables)

    quiet = sync(emulator, tmp_path, entities=list(FOLLOWERS))
    assert quiet.loaded == {}
    assert not any(path.endswith("/followers") for path in quiet.emulator_stats["requests"])

    deal = emulator.control.snapshot("deals")[0]
    person = emulator.control.snapshot("persons")[0]
    follower = next(u["id"] for u in emulator.control.snapshot("users") if u["id"] != deal["owner_id"])
    changes = emulator.control.mutate(
        ops=[
            {"op": "follow", "table": "deals", "id": deal["id"], "user_id": follower},
            {"op": "unfollow", "table": "persons", "id": person["id"], "user_id": person["owner_id"]},
        ]
    )
    assert changes["updated"] == {"deals": [deal["id"]], "persons": [person["id"]]}  # both stamped
    result = sync(emulator, tmp_path, entities=list(FOLLOWERS))
    requests = result.emulator_stats["requests"]
    assert requests[_followers_path("deals")] == requests[_followers_path("persons")] == 1
    assert _followers_path("products") not in requests
    deal_rows = synced_rows(result.pipeline, "deal_followers")
    assert f"{deal['id']}:{follower}" in {r["follower_key"] for r in deal_rows}
    person_rows = synced_rows(result.pipeline, "person_followers")
    assert f"{person['id']}:{person['owner_id']}" not in {r["follower_key"] for r in person_rows}  # gone
    assert_equal_to_truth(emulator, tmp_path, tables)

    # a deleted product vanishes from the list: its followers go once a reconcile learns the live ids
    product = emulator.control.snapshot("products")[0]["id"]
    emulator.control.mutate(ops=[{"op": "delete", "table": "products", "id": product}])
    sync(emulator, tmp_path, entities=["product_followers"])
    reconciled = sync(emulator, tmp_path, entities=["product_followers"], reconcile=True)
    assert product not in {r["product_id"] for r in synced_rows(reconciled.pipeline, "product_followers")}
    assert_equal_to_truth(emulator, tmp_path, ["product_followers", "products"])


def test_followers_follow_the_cursor_across_pages(emulator, tmp_path: Path) -> None:
    """GetFollowersResponse pages by `next_cursor`: a record with two followers at one per page is two
    requests, and both rows arrive."""
    result = sync(emulator, tmp_path, entities=["product_followers"], page_size=1)
    truth = emulator.control.snapshot("product_followers")
    per_product = Counter(row["product_id"] for row in truth)
    assert max(per_product.values()) > 1
    products = emulator.control.snapshot("products")
    pages = sum(max(1, per_product[p["id"]]) for p in products)
    assert result.emulator_stats["requests"][_followers_path("products")] == pages
    assert len(synced_rows(result.pipeline, "product_followers")) == len(truth)


def test_organization_relationships_per_organization_and_their_deletes(emulator, tmp_path: Path) -> None:
    tables = [RELATIONSHIPS, "organizations"]
    first = sync(emulator, tmp_path, entities=[RELATIONSHIPS])
    orgs = emulator.control.snapshot("organizations")
    stats = first.emulator_stats
    assert stats["requests"][RELATIONSHIPS_PATH] == len(orgs)  # one per organization, org_id in the query
    assert stats["tokens"][RELATIONSHIPS_PATH] == 20 * len(orgs)
    rows = synced_rows(first.pipeline, RELATIONSHIPS)
    assert rows and all(r["relationship_key"] == f"{r['org_id']}:{r['id']}" for r in rows)
    # listed under both organizations, each row as its organization sees it
    assert all(len([r for r in rows if r["id"] == rel]) == 2 for rel in {r["id"] for r in rows})
    assert all(r["calculated_related_org_id"] != r["org_id"] for r in rows)
    assert_equal_to_truth(emulator, tmp_path, tables)

    rel = min(rows, key=lambda r: r["id"])
    owner, linked = rel["rel_owner_org_id__value"], rel["rel_linked_org_id__value"]
    changes = emulator.control.mutate(ops=[{"op": "delete", "table": RELATIONSHIPS, "id": rel["id"]}])
    assert "organizations" not in changes["updated"]  # the spec does not say it stamps them
    unseen = sync(emulator, tmp_path, entities=[RELATIONSHIPS])
    assert RELATIONSHIPS_PATH not in unseen.emulator_stats["requests"]

    emulator.control.mutate(
        ops=[{"op": "update", "table": "organizations", "id": owner, "changes": {"name": "Renamed Ltd"}}]
    )
    reread = sync(emulator, tmp_path, entities=[RELATIONSHIPS])
    assert reread.emulator_stats["requests"][RELATIONSHIPS_PATH] == 1  # only the changed organization
    keys = {r["relationship_key"] for r in synced_rows(reread.pipeline, RELATIONSHIPS)}
    assert f"{owner}:{rel['id']}" not in keys and f"{linked}:{rel['id']}" in keys  # its parent was re-read

    # an organization deleted: it leaves the list, and its relationships both organizations' lists
    other = max(rows, key=lambda r: r["id"])
    gone = other["org_id"]
    emulator.control.mutate(ops=[{"op": "delete", "table": "organizations", "id": gone}])
    reconciled = sync(emulator, tmp_path, entities=[RELATIONSHIPS], reconcile=True)
    # every live organization: changes to relationships leave them unstamped
    assert reconciled.emulator_stats["requests"][RELATIONSHIPS_PATH] == len(orgs) - 1
    synced = synced_rows(reconciled.pipeline, RELATIONSHIPS)
    keys = {r["relationship_key"] for r in synced}
    assert f"{linked}:{rel['id']}" not in keys
    assert other["id"] not in {r["id"] for r in synced} and gone not in {r["org_id"] for r in synced}
    assert_equal_to_truth(emulator, tmp_path, tables)
