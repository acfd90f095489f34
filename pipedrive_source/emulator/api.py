"""The pure request -> response core of the emulator: `handle(company, method, path, query)`.

Routing goes over the spec's operations (`spec.match`); an operation the emulator serves has a handler in
`ROUTES`. A path the spec does not have — or an operation the emulator does not serve — gets Pipedrive's
404 for unknown methods and costs no tokens. Query validation (params.py) rejects any parameter the
operation does not list with 400, as API v2's strict validation does; see routes_v2/routes_v1 for the
semantics of each list. Authentication, rate limits and faults are the ASGI app's business, not this one's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from . import org_relationships, spec
from . import routes_v1 as v1
from . import routes_v2 as v2
from .faults import ERROR_INFO
from .params import BadRequest, NotFound, parse_query

if TYPE_CHECKING:
    from .company import Company


@dataclass
class ApiResponse:
    status: int
    body: bytes
    token_cost: int
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[v2.Req], tuple[int, bytes]]

ROUTES: dict[tuple[str, str], Handler] = {
    # v2 lists
    ("v2", "/api/v2/activities"): v2.v2_list("activities"),
    ("v2", "/api/v2/deals"): v2.v2_list("deals"),
    ("v2", "/api/v2/deals/archived"): v2.v2_list("deals", "archived"),
    ("v2", "/api/v2/deals/products"): v2.by_deal_ids("deal_products"),
    ("v2", "/api/v2/deals/installments"): v2.by_deal_ids("deal_installments"),
    ("v2", "/api/v2/persons"): v2.v2_list("persons"),
    ("v2", "/api/v2/organizations"): v2.v2_list("organizations"),
    ("v2", "/api/v2/products"): v2.v2_list("products"),
    ("v2", "/api/v2/products/{id}/variations"): v2.variations,
    ("v2", "/api/v2/deals/{id}/products"): v2.deal_products_of,
    ("v2", "/api/v2/deals/{id}/discounts"): v2.deal_discounts,
    ("v2", "/api/v2/pipelines"): v2.v2_list("pipelines"),
    ("v2", "/api/v2/stages"): v2.v2_list("stages"),
    ("v2", "/api/v2/projects"): v2.v2_list("projects"),
    ("v2", "/api/v2/projects/archived"): v2.v2_list("projects", "archived"),
    ("v2", "/api/v2/tasks"): v2.v2_list("tasks"),
    ("v2", "/api/v2/boards"): v2.boards,
    ("v2", "/api/v2/phases"): v2.phases,
    ("v2", "/api/v2/projectTemplates"): v2.v2_list("project_templates"),
    # v2 single records and followers
    **{
        ("v2", f"/api/v2/{name}/{{id}}"): v2.get_one(name)
        for name in (
            "activities",
            "deals",
            "persons",
            "organizations",
            "products",
            "pipelines",
            "stages",
            "projects",
            "tasks",
            "boards",
            "phases",
        )
    },
    **{
        ("v2", f"/api/v2/{name}/{{id}}/followers"): v2.followers(name)
        for name in ("deals", "persons", "organizations", "products", "users")
    },
    # v2 fields
    **{
        ("v2", f"/api/v2/{entity}Fields"): v2.fields_list(f"{entity}_fields")
        for entity in ("activity", "deal", "person", "organization", "product", "project")
    },
    **{
        ("v2", f"/api/v2/{entity}Fields/{{field_code}}"): v2.field_one(f"{entity}_fields")
        for entity in ("activity", "deal", "person", "organization", "product", "project")
    },
    # v1
    ("v1", "/v1/leads"): v1.v1_list("leads", "live", "add_time"),
    ("v1", "/v1/leads/archived"): v1.v1_list("leads", "archived", "add_time"),
    ("v1", "/v1/leadLabels"): v1.v1_all("lead_labels"),
    ("v1", "/v1/leadSources"): v1.v1_all("lead_sources"),
    ("v1", "/v1/notes"): v1.v1_list("notes"),
    ("v1", "/v1/noteFields"): v1.fields_list("note_fields"),
    ("v1", "/v1/leadFields"): v1.fields_list("lead_fields"),
    ("v1", "/v1/files"): v1.v1_list("files"),
    ("v1", "/v1/users"): v1.v1_all("users"),
    ("v1", "/v1/users/me"): v1.current_user,
    ("v1", "/v1/callLogs"): v1.v1_list("call_logs", "live", "start_time"),
    ("v1", "/v1/activityTypes"): v1.v1_all("activity_types"),
    ("v1", "/v1/currencies"): v1.currencies,
    ("v1", "/v1/filters"): v1.v1_all("filters", "type"),
    ("v1", "/v1/roles"): v1.v1_list("roles"),
    ("v1", "/v1/permissionSets"): v1.v1_all("permission_sets", "app"),
    ("v1", "/v1/goals/find"): v1.goals,
    ("v1", "/v1/legacyTeams"): v1.legacy_teams,
    ("v1", "/v1/deals/{id}/flow"): v1.per_deal("flow"),
    ("v1", "/v1/deals/{id}/participants"): v1.per_deal("participants"),
    ("v1", "/v1/organizationRelationships"): org_relationships.handler,
}


def _error(message: str, info: str = ERROR_INFO, code: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "success": False,
            "error": message,
            "error_info": info,
            "data": None,
            "additional_data": {"code": code} if code else None,
        }
    )


def unknown_path() -> ApiResponse:
    return ApiResponse(404, _error("Unknown method ."), 0)


def cost_of(method: str, path: str) -> int:
    """Token cost of a request before handling it (0 for paths the emulator does not serve)."""
    m = spec.match(method, path)
    if m is None or (m[0].api, m[0].path) not in ROUTES:
        return 0
    return m[0].token_cost


def handle(company: Company, method: str, path: str, query: list[tuple[str, str]]) -> ApiResponse:
    m = spec.match(method, path)
    if m is None:
        return unknown_path()
    op, path_params = m
    handler = ROUTES.get((op.api, op.path))
    if handler is None:
        return unknown_path()
    try:
        q = parse_query(op, query)
        status, body = handler(v2.Req(company, op, path_params, q))
    except BadRequest as e:
        return ApiResponse(400, _error(e.message, code=e.code), op.token_cost)
    except NotFound:
        return ApiResponse(404, _error("Entity was not found", "Object was not found."), op.token_cost)
    return ApiResponse(status, body, op.token_cost)
