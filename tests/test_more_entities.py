"""Project templates (v2), legacy teams (v1, members as `teams__users`) and the opt-in deal discounts (v2, one
request per changed deal) against the emulator: a sync loads what the emulator holds (row by row, child
tables included), a run without changes costs at most one request per entity, and deletes reach the
warehouse the way the API shows them (a template or team leaves its list: flagged; a discount leaves its
deal's list, and the deal is stamped: its rows are replaced)."""

from __future__ import annotations

from pathlib import Path

from connector_fixtures import assert_equal_to_truth, sync, synced_rows

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
