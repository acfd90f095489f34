"""What a company's plan or a user's permissions keep from a request: HTTP 402 and 403.

- plan: Pipedrive's plans, lowest first: lite, growth, premium, ultimate. An operation the spec says is "Only
  available in Growth and above plans" (deal installments) answers 402 Payment Required on a lower plan; the
  default plan (ultimate) has every operation.
- forbidden: path templates as served (`/api/v2/deals/installments`, `/v1/users/{id}/followers`) answered 403
  Forbidden, as for a user without the permission (the v1 spec lists 403 for the endpoints only global
  admins may read). Its body is the spec's `callLogResponse403` / `failResponse` shape.
- lapsed: the company's subscription has lapsed (or its trial ended): every operation answers 402, the
  user's own `/v1/users/me` included. The error text is the emulator's own (the spec does not give one).
"""

from __future__ import annotations

import orjson

from .faults import ERROR_INFO

PLANS = ("lite", "growth", "premium", "ultimate")
FORBIDDEN_TEXT = "You don't have permission to access the resource."
LAPSED_TEXT = "Payment required: the company's subscription is not active"


def check_plan(plan: str) -> str:
    if plan not in PLANS:
        raise ValueError(f"plan must be one of {', '.join(PLANS)}, not {plan!r}")
    return plan


def forbidden_paths(setting: str) -> frozenset[str]:
    """The `forbidden` setting: a comma list of path templates."""
    return frozenset(p.strip() for p in setting.split(",") if p.strip())


def refusal(
    template: str, lowest_plan: str | None, plan: str, forbidden: frozenset[str], lapsed: bool = False
) -> tuple[int, bytes] | None:
    """(status, body) when the company's `plan` (or its `lapsed` subscription) or the user's permissions
    refuse the operation served at `template` (available from `lowest_plan` up), else None."""
    if lapsed:
        return 402, _body(LAPSED_TEXT)
    if template in forbidden:
        return 403, _body(FORBIDDEN_TEXT)
    if lowest_plan and PLANS.index(check_plan(plan)) < PLANS.index(lowest_plan):
        return 402, _body(f"Only available in {lowest_plan.capitalize()} and above plans")
    return None


def _body(error: str) -> bytes:
    return orjson.dumps(
        {"success": False, "error": error, "error_info": ERROR_INFO, "data": None, "additional_data": None}
    )
