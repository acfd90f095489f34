"""Filters and envelope parts the spec documents, checked over HTTP against the v1 reference's own text.

Each test reads the parameter list (names, descriptions) or response schema from
`../shared/reference/pipedrive-api-v1-openapi.yaml`, so a parameter the reference adds fails the test
until the emulator honours it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_emulator_conformance import _v1_yaml, get_json, unlimited_emulator, v1_problems

from pipedrive_source.emulator import EmulatorHandle
from pipedrive_source.emulator.routes_v1 import EVERYONES_GOALS


@pytest.fixture(scope="module")
def reference() -> dict:
    return _v1_yaml()


@pytest.fixture(scope="module")
def v1_openapi(reference: dict) -> Any:
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(_v1_yaml())


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    # its own company: the tests below mutate records to give every filter something to tell apart
    with unlimited_emulator() as handle:
        yield handle


def query_params(reference: dict, path: str) -> dict[str, dict[str, Any]]:
    """The query parameters of GET `path` (a /v1 path) in the v1 reference, by name."""
    op = reference["paths"][path.removeprefix("/v1")]["get"]
    return {p["name"]: p for p in op.get("parameters") or () if p["in"] == "query"}


# --- /v1/goals/find ---------------------------------------------------------------------------------------


def dotted(goal: dict[str, Any], name: str) -> Any:
    value: Any = goal
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def goal_ids(client: httpx.Client, params: dict[str, Any]) -> set[str]:
    return {g["id"] for g in get_json(client, "/v1/goals/find", params)["data"]["goals"]}


EVERYONE = {"expected_outcome.tracking_metric": "quantity"}, {"expected_outcome.tracking_metric": "sum"}


def everyones_goals(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    """Every goal (with `params`): one request per tracking metric, a filter that asks for everyone's."""
    return [
        g
        for each in EVERYONE
        for g in get_json(client, "/v1/goals/find", {**each, **params})["data"]["goals"]
    ]


def test_v1_goals_find_without_a_filter_for_everyone_answers_the_users_own_goals(
    client: httpx.Client, reference: dict
) -> None:
    """getGoals' `assignee.id`: "When omitted, only your goals will be returned"; the filters whose
    description says "If provided, everyone's goals will be returned" (`EVERYONES_GOALS`) answer everyone's.
    The emulator answered everyone's goals to every request, so a client reading `/goals/find` with
    `is_active` alone (the connector did) loaded every goal here and only its own user's from Pipedrive."""
    params = query_params(reference, "/v1/goals/find")
    said = {n for n, p in params.items() if "everyone's goals will be returned" in p.get("description", "")}
    assert said == EVERYONES_GOALS
    me = get_json(client, "/v1/users/me")["data"]["id"]
    every = everyones_goals(client)
    mine = {g["id"] for g in every if g["assignee"] == {"id": me, "type": "person"}}
    assert mine and len(mine) < len(every), "the tiny company has goals of its user and of others"
    assert goal_ids(client, {}) == mine
    assert goal_ids(client, {"title": next(g for g in every if g["id"] in mine)["title"]}) <= mine
    other = next(g for g in every if g["id"] not in mine)
    assert goal_ids(client, {"assignee.id": other["assignee"]["id"]}) == {other["id"]}
    for name in EVERYONES_GOALS & {"type.name", "assignee.type", "expected_outcome.tracking_metric"}:
        want = {g["id"] for g in every if dotted(g, name) == dotted(other, name)}
        assert goal_ids(client, {name: dotted(other, name)}) == want, name


def test_v1_goals_find_applies_every_filter_the_spec_lists(
    emu: EmulatorHandle, client: httpx.Client, reference: dict, v1_openapi: Any
) -> None:
    """getGoals names each filter after the goal attribute it selects on (`assignee.id`, `type.params.
    pipeline_id`, ...): all of them but `type.name` and `is_active` were accepted and ignored, so a client
    asking for one user's goals got everyone's. Each filter, given a value one goal has, returns exactly
    the goals (active unless `is_active=false`, its default being true) whose attribute has that value;
    `period.start`..`period.end` those whose duration overlaps the period; `period.start` alone is a 400
    ("When `period.start` is provided, `period.end` must be provided too")."""
    goals = sorted(everyones_goals(client), key=lambda g: g["id"])
    assert len(goals) >= 3, "the tiny company has goals"
    me = get_json(client, "/v1/users/me")["data"]["id"]
    first = next(g for g in goals if g["assignee"] == {"id": me, "type": "person"})
    goals.remove(first)
    goals.insert(0, first)
    first, other, odd = goals[0], goals[1], goals[2]
    unrendered = {"expected_outcome.currency_id": 3, "type.params.stage_id": 2}  # not in the item schema
    changes = {
        "title": "Quarterly push",
        "is_active": False,
        "assignee": {
            "id": me,
            "type": "person",
        },  # the user's own: found by filters that are not for everyone
        "type": {"name": odd["type"]["name"], "params": {"pipeline_id": [2, 1], "activity_type_id": [3]}},
        "expected_outcome": {"target": 70, "tracking_metric": "sum", "currency_id": 3},
        "duration": {"start": "2020-01-01", "end": "2020-03-31"},
    }
    changes["type"]["params"]["stage_id"] = 2
    emu.control.mutate(ops=[{"op": "update", "table": "goals", "id": odd["id"], "changes": changes}])
    every = [*everyones_goals(client), *everyones_goals(client, is_active="false")]
    odd = next(g for g in every if g["id"] == odd["id"])
    assert odd["is_active"] is False and other["is_active"] is True

    params = query_params(reference, "/v1/goals/find")
    checked = set()
    for name, param in params.items():
        if name.startswith("period.") or name == "is_active":
            continue
        for goal in (first, odd):
            value = unrendered.get(name) if name in unrendered and goal is odd else dotted(goal, name)
            if value is None:
                continue
            is_list = param["schema"]["type"] == "array"
            query = {name: ",".join(map(str, value)) if is_list else value}
            if not goal["is_active"]:
                query["is_active"] = "false"
            want = {
                g["id"]
                for g in every
                if g["is_active"] == goal["is_active"]
                and (name in EVERYONES_GOALS or name == "assignee.id" or g["assignee"] == first["assignee"])
                and (
                    g["id"] == odd["id"]
                    if name in unrendered
                    else (sorted(dotted(g, name)) if is_list else dotted(g, name))
                    == (sorted(value) if is_list else value)
                )
            }
            assert goal["id"] in want
            got = goal_ids(client, query)
            assert got == want, f"{name}={query[name]}: {sorted(got)}, want {sorted(want)}"
            if name == "type.name" or len(want) < sum(g["is_active"] == goal["is_active"] for g in every):
                checked.add(name)
    assert checked == set(params) - {"period.start", "period.end", "is_active"}, checked

    sums = {"expected_outcome.tracking_metric": "sum"}
    active_sums = {
        g["id"] for g in every if g["is_active"] and g["expected_outcome"]["tracking_metric"] == "sum"
    }
    assert goal_ids(client, sums) == active_sums  # is_active defaults to true
    assert goal_ids(client, {**sums, "is_active": "false"}) == {odd["id"]}
    inside = {"period.start": "2020-03-01", "period.end": "2020-06-30", "is_active": "false", **sums}
    assert goal_ids(client, inside) == {odd["id"]}
    assert goal_ids(client, {**inside, "period.start": "2020-04-01"}) == set()
    assert goal_ids(client, {"period.end": "2019-12-31", "is_active": "false"}) == set()
    for bad in ({"period.start": "2020-01-01"}, {"period.start": "2020-01-01", "period.end": "31.12.2020"}):
        r = client.get("/v1/goals/find", params=bad)
        assert r.status_code == 400 and "period" in r.json()["error"], (bad, r.text)
    body = get_json(client, "/v1/goals/find", {"assignee.type": "person", "is_active": "false"})
    assert not v1_problems(v1_openapi, "/v1/goals/find", body)


def words(description: str) -> list[str]:
    """The values a description enumerates as "(Possible values - a, b, c)"."""
    listed = re.search(r"\(Possible values - ([^)]*)\)", description)
    assert listed, description
    return [w.strip() for w in listed[1].split(",")]


# --- /v1/deals/{id}/flow ----------------------------------------------------------------------------------


def flow(client: httpx.Client, deal_id: int, **params: Any) -> list[dict[str, Any]]:
    items, start = [], 0
    while True:
        body = get_json(client, f"/v1/deals/{deal_id}/flow", {**params, "start": start, "limit": 500})
        items += body["data"]
        if not body["additional_data"]["more_items_in_collection"]:
            return items
        start += 500


# `items` values naming a subset of one kind of flow item, and what sets the subset apart
FLOW_SUBKINDS = {
    "plannedActivity": ("activity", lambda data: not data["done"]),
    "call": ("activity", lambda data: data["type"] == "call"),
    "mailMessageWithAttachment": ("mailMessage", lambda data: bool(data["attachments"])),
    "change": ("dealChange", lambda data: True),
}


def test_v1_deal_flow_items_keeps_the_kinds_of_update_named(
    client: httpx.Client, reference: dict, deal_ids: list[int]
) -> None:
    """getDealUpdates' `items` ("A comma-separated string for filtering out item specific updates",
    values listed in its description) was accepted and ignored: a client asking for a deal's notes got its
    whole flow. Every value the description lists is taken; a value naming an item `object` keeps exactly
    those items, in the flow's order; `plannedActivity`, `call`, `mailMessageWithAttachment` and `change`
    the activities not done, the calls, the mails with attachments, the field changes; several values keep
    the union; a value the description does not list is a 400."""
    values = words(query_params(reference, "/v1/deals/{id}/flow")["items"]["description"])
    assert {"activity", "note", "file", "dealChange", "mailMessage", *FLOW_SUBKINDS} <= set(values)
    seen: set[str] = set()
    for deal_id in deal_ids:
        whole = flow(client, deal_id, all_changes=1)
        for value in values:
            kind, test = FLOW_SUBKINDS.get(value, (value, lambda data: True))
            want = [i for i in whole if i["object"] == kind and test(i["data"])]
            assert flow(client, deal_id, all_changes=1, items=value) == want, (deal_id, value)
            if want:
                seen.add(value)
        pair = [i for i in whole if i["object"] in ("note", "mailMessage")]
        assert flow(client, deal_id, all_changes=1, items="note,mailMessage") == pair
    assert {"activity", "note", "file", "dealChange", "mailMessage", *FLOW_SUBKINDS} <= seen, seen
    r = client.get(f"/v1/deals/{deal_ids[0]}/flow", params={"items": "note,email"})
    assert r.status_code == 400 and "items" in r.json()["error"], r.text


@pytest.fixture(scope="module")
def deal_ids(client: httpx.Client) -> list[int]:
    return [d["id"] for d in get_json(client, "/api/v2/deals", {"limit": 40})["data"]]


# --- related_objects of a deal's flow and participants ----------------------------------------------------


def resolved(reference: dict, node: Any) -> dict[str, Any]:
    """A schema node with its $ref followed and its allOf parts' properties merged."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = reference
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    out = {k: v for k, v in node.items() if k not in ("allOf", "properties")}
    props = dict(node.get("properties") or {})
    for part in node.get("allOf") or ():
        merged = resolved(reference, part)
        props.update(merged.get("properties") or {})
        out.update({k: v for k, v in merged.items() if k not in ("properties", "type")})
    out["properties"] = props
    return out


JSON_TYPES = {"integer": int, "number": (int, float), "string": str, "boolean": bool, "array": list}

# what each item of a page refers to, per related_objects category: (path into the item, category)
FLOW_REFS = (("data.user_id", "user"), ("data.person_id", "person"), ("data.org_id", "organization"))
PARTICIPANT_REFS = (
    ("person_id.value", "person"),
    ("added_by_user_id.id", "user"),
    ("person.owner_id.id", "user"),
    ("person.org_id.value", "organization"),
)


@pytest.mark.parametrize("template", ["/v1/deals/{id}/flow", "/v1/deals/{id}/participants"])
def test_v1_per_deal_lists_carry_the_related_objects_their_schema_declares(
    client: httpx.Client, reference: dict, deal_ids: list[int], template: str
) -> None:
    """GetDealUpdates and GetDealParticipants declare `related_objects` next to `data`: the users,
    persons, organizations (and for the flow, deals) the page refers to, keyed by id, in the shapes the
    schema gives its placeholder keys (USER_ID, ...; an organization's `active_flag` as the examples show).
    The emulator left them out, so a client reading names from them found none. Each page's envelope now
    has exactly the schema's top-level keys, every object a page item refers to is listed, as its record is
    (names as the v2 lists give them), and every listed one has the declared keys and types."""
    media = reference["paths"][template.removeprefix("/v1")]["get"]["responses"]["200"]["content"]
    schema, example = (
        resolved(reference, media["application/json"]["schema"]),
        media["application/json"]["example"],
    )
    related_schema = resolved(reference, schema["properties"]["related_objects"])["properties"]
    examples = {
        k: v
        for part in example["related_objects"].get("allOf", [example["related_objects"]])
        for k, v in part.items()
    }
    names = {
        "user": {u["id"]: u["name"] for u in get_json(client, "/v1/users")["data"]},
        "person": {p["id"]: p["name"] for p in get_json(client, "/api/v2/persons", {"limit": 500})["data"]},
        "organization": {
            o["id"]: o["name"] for o in get_json(client, "/api/v2/organizations", {"limit": 500})["data"]
        },
    }
    refs = FLOW_REFS if "flow" in template else PARTICIPANT_REFS
    seen: set[str] = set()
    for deal_id in deal_ids[:15]:
        path = template.replace("{id}", str(deal_id))
        start, more = 0, True
        while more:
            body = get_json(client, path, {"start": start, "limit": 7})
            assert set(body) == set(schema["properties"]), sorted(body)
            related = body["related_objects"]
            assert set(related) == set(related_schema), sorted(related)
            for name, objects in related.items():
                (placeholder,) = resolved(reference, related_schema[name])["properties"].values()
                declared = resolved(reference, placeholder)["properties"]
                shown = set(next(iter(examples[name].values())))
                for key, obj in objects.items():
                    seen.add(name)
                    assert key == str(obj["id"]) and set(obj) <= set(declared) | shown, (name, obj)
                    for prop, value in obj.items():
                        kind = (declared.get(prop) or {}).get("type")
                        if value is not None and kind is not None:
                            ok = isinstance(value, JSON_TYPES[kind]) and (kind == "boolean") == (
                                type(value) is bool
                            )
                            assert ok, (name, prop, value)
                    if name in names:
                        assert names[name].get(obj["id"], obj["name"]) == obj["name"], (name, obj)
            wanted = {(name, dotted(item, ref)) for item in body["data"] for ref, name in refs}
            if "flow" in template:
                wanted.add(("deal", deal_id))
            for name, ident in wanted:
                if isinstance(ident, int) and not isinstance(ident, bool):
                    assert str(ident) in related[name], (path, start, name, ident)
            more = body["additional_data"]["more_items_in_collection"]
            start += 7
    assert seen == set(related_schema), seen
