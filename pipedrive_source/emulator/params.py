"""Query-parameter validation against the spec's parameter list of an operation.

Pipedrive API v2 validates input strictly ("significantly stricter input validation" in its migration
guide): a parameter the operation does not list, a value of the wrong type or outside the enum is a 400.
The emulator applies the same strictness to v1 endpoints too, so a client that sends a filter an endpoint
does not have (say `updated_since` to `/v1/notes`) learns it at once instead of silently getting an
unfiltered list. `api_token` is a credential, never a parameter, and is ignored here.

Types: integer and number parse as such; v2 booleans must be `true`/`false` (v1 also takes `1`/`0`);
array parameters (`deal_ids`) accept repeated keys and comma-separated values; `include_fields` and
deals' `status` ("Multiple statuses can be included as a comma separated array" in the v2 spec) are comma
lists whose every member must be in the enum (parsed to a list); v1 `sort` is `field [ASC|DESC]` pairs,
fields from the enum (for notes and files, the "Supported fields" of the parameter's description, which
`tools/derive_spec.py` turns into one). A repeated scalar parameter keeps its last value.
"""

from __future__ import annotations

from typing import Any

from .spec import Operation, Param


class BadRequest(Exception):
    """Becomes HTTP 400 with Pipedrive's error body."""

    def __init__(self, message: str, code: str = "ERR_SCHEMA_VALIDATION_FAILED"):
        super().__init__(message)
        self.message, self.code = message, code


class NotFound(Exception):
    """Becomes HTTP 404 with Pipedrive's error body."""


IGNORED = frozenset({"api_token"})
_COMMA_ENUMS = frozenset({"include_fields"})
_COMMA_ENUMS_OF = {"/api/v2/deals": frozenset({"status"}), "/api/v2/deals/archived": frozenset({"status"})}


def _bool(name: str, raw: str, api: str) -> bool:
    lowered = raw.lower()
    if lowered == "true" or (api == "v1" and lowered == "1"):
        return True
    if lowered == "false" or (api == "v1" and lowered == "0"):
        return False
    raise BadRequest(f"Validation failed: {name}: Expected boolean, received '{raw}'")


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"Validation failed: {name}: Expected integer, received '{raw}'") from None


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(f"Validation failed: {name}: Expected number, received '{raw}'") from None


def _check_enum(p: Param, value: Any) -> None:
    if p.enum and str(value) not in p.enum and value not in p.enum:
        raise BadRequest(f"Validation failed: {p.name}: must be one of {', '.join(map(str, p.enum))}")


def _sort_pairs(p: Param, raw: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw.split(","):
        bits = part.strip().split()
        if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1].upper() not in ("ASC", "DESC")):
            raise BadRequest(f"Validation failed: sort: invalid sort expression '{part.strip()}'")
        if p.enum and bits[0] not in p.enum:
            raise BadRequest(f"Validation failed: sort: field '{bits[0]}' is not sortable")
        pairs.append((bits[0], bits[1].upper() if len(bits) == 2 else "ASC"))
    return pairs


def _scalar(p: Param, raw: str, api: str, comma: bool = False) -> Any:
    t = p.type
    if t == "integer":
        v: Any = _int(p.name, raw)
    elif t == "number":
        v = _number(p.name, raw)
    elif t == "boolean":
        v = _bool(p.name, raw, api)
    else:
        v = raw
    if comma:
        parts = [x.strip() for x in raw.split(",") if x.strip()]
        for x in parts:
            _check_enum(p, x)
        return parts
    if p.name == "sort" and api == "v1":
        return _sort_pairs(p, raw)
    if t == "number" and p.enum:
        _check_enum(p, int(v) if float(v).is_integer() else v)
    else:
        _check_enum(p, v)
    return v


def parse_query(op: Operation, query: list[tuple[str, str]]) -> dict[str, Any]:
    """Validated query values by name; raises BadRequest as Pipedrive would."""
    out: dict[str, Any] = {}
    for name, raw in query:
        if name in IGNORED:
            continue
        p = op.params.get(name)
        if p is None:
            raise BadRequest(f"Validation failed: {name}: Parameter '{name}' is not allowed for this request")
        if p.type == "array":
            items = [x for x in raw.split(",") if x != ""]
            out.setdefault(name, []).extend(_int(name, x) for x in items)
        else:
            comma = name in _COMMA_ENUMS or name in _COMMA_ENUMS_OF.get(op.path, ())
            out[name] = _scalar(p, raw, op.api, comma)
    for name, p in op.params.items():
        if p.required and name not in out and name != "id":
            raise BadRequest(f"Validation failed: {name}: Required parameter '{name}' is missing")
    return out
