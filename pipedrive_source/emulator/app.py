"""The emulator's raw ASGI application: transport concerns around CORE's pure `handle()`.

Per request: `/_emulator/*` control endpoints (no auth, no rate limit), then `POST /oauth/token` (of the
faults, 5xx and the byte order mark only), then every other path as Pipedrive: authenticate -> rate limit ->
fault injection -> the plan's and the user's refusals (402/403, `access.py`) -> `handle()` under
`company.lock`. Every Pipedrive response carries the rate-limit headers (see `ratelimit.py`) and a `Date`
header with the emulator clock (`company.now()`), so a client can read "server now" from it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from . import access, faults
from .auth import MAIN, Authenticator, AuthFailure, Credential, OAuthServer, unauthorized_body
from .faults import ERROR_INFO, FaultInjector, FaultSettings
from .ratelimit import BURST, RateLimiter
from .stats import INJECTED, Stats

log = logging.getLogger("pipedrive_source.emulator")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Headers = list[tuple[str, str]]

POST_PUT_DAILY_LIMIT = 10_000  # Pipedrive's documented POST/PUT fair-usage limit (x-daily-requests-left)
UNMATCHED = "<unmatched>"


def _opt(help_text: str, runtime: bool = False) -> dict[str, Any]:
    return {"help": help_text, "runtime": runtime}


@dataclass
class EmulatorSettings:
    """Everything configurable at startup (CLI flags are derived from these fields: `--burst-limit` ...).

    Fields marked runtime can also be changed on a running emulator with `POST /_emulator/settings`.
    """

    seed: int = field(default=7, metadata=_opt("seed of the synthetic company (and of faults by default)"))
    scale: str = field(default="small", metadata=_opt("tiny | small | medium | large | xlarge"))
    api_token: str = field(default="emulator-token", metadata=_opt("the valid API token"))
    other_company_token: str = field(
        default="other-company-token",
        metadata=_opt("a valid API token of a different company (a tiny company from seed+1); '' disables"),
    )
    oauth_client_id: str = field(default="emulator-client-id", metadata=_opt("OAuth client id"))
    oauth_client_secret: str = field(default="emulator-client-secret", metadata=_opt("OAuth client secret"))
    oauth_refresh_token: str = field(default="emulator-refresh-token", metadata=_opt("OAuth refresh token"))
    oauth_expires_in: int = field(default=3599, metadata=_opt("access token lifetime, seconds", True))
    burst_limit: int = field(default=100, metadata=_opt("requests per 2 s per API token", True))
    oauth_burst_limit: int = field(default=400, metadata=_opt("requests per 2 s per access token", True))
    daily_budget: int = field(default=1_500_000, metadata=_opt("daily token budget of the company", True))
    budget_period_s: float = field(
        default=0.0, metadata=_opt("reset the budget every N real seconds (0: at emulator midnight)", True)
    )
    latency_ms: float = field(default=0.0, metadata=_opt("fixed latency per request", True))
    jitter_ms: float = field(default=0.0, metadata=_opt("plus uniform random latency up to this", True))
    queue_ms: float = field(
        default=0.0, metadata=_opt("delay before a request is counted, in the first half of every 3 s", True)
    )
    error_rate: float = field(default=0.0, metadata=_opt("share of requests answered 5xx", True))
    throttle_rate: float = field(default=0.0, metadata=_opt("share answered with a spurious 429", True))
    drop_rate: float = field(default=0.0, metadata=_opt("share whose connection drops mid-body", True))
    malformed_rate: float = field(default=0.0, metadata=_opt("share answered with truncated JSON", True))
    stuck_rate: float = field(default=0.0, metadata=_opt("share answered as if without cursor/start", True))
    html_rate: float = field(default=0.0, metadata=_opt("share answered 200 with an HTML page", True))
    bom_rate: float = field(
        default=0.0, metadata=_opt("share of JSON answers starting with a UTF-8 byte order mark", True)
    )
    fault_seed: int | None = field(default=None, metadata=_opt("seed of the fault RNG (default: seed)", True))
    max_in_a_row: int = field(
        default=0, metadata=_opt("faults one request (method, path, query) gets in a row; 0: no cap", True)
    )
    plan: str = field(
        default="ultimate",
        metadata=_opt("lite | growth | premium | ultimate: below growth, deal installments get 402", True),
    )
    forbidden: str = field(
        default="",
        metadata=_opt("comma list of path templates answered 403 (a user without permission)", True),
    )
    down_path: str = field(
        default="", metadata=_opt("a path answered 5xx every time (one service down); '' for none", True)
    )
    empty_path: str = field(
        default="",
        metadata=_opt("a list path answered 200 with no items every time (content lost); '' for none", True),
    )
    lapsed: bool = field(
        default=False, metadata=_opt("the subscription has lapsed: every Pipedrive request answers 402", True)
    )
    prerender: bool = field(
        default=True,
        metadata=_opt("render every record's JSON before serving (a slower start, fast first reads)"),
    )

    SECRETS = ("api_token", "other_company_token", "oauth_client_secret", "oauth_refresh_token")

    def __post_init__(self) -> None:
        access.check_plan(self.plan)

    @classmethod
    def runtime_fields(cls) -> set[str]:
        return {f.name for f in fields(cls) if f.metadata.get("runtime")}

    def public(self) -> dict[str, Any]:
        """The settings without secrets (for `GET /_emulator/settings`)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.SECRETS}


class EmulatorApp:
    """ASGI callable. `handle`, `cost_of` and `match` default to CORE's and SPEC's functions."""

    def __init__(
        self,
        company: Any,
        settings: EmulatorSettings | None = None,
        handle: Callable[..., Any] | None = None,
        cost_of: Callable[[str, str], int] | None = None,
        match: Callable[[str, str], Any] | None = None,
    ) -> None:
        self.company = company
        # a copy: runtime changes must not alter the caller's startup settings (tests restore from them)
        self.settings = dataclasses.replace(settings) if settings else EmulatorSettings()
        self._handle, self._cost_of, self._match = _core_functions(handle, cost_of, match)
        s = self.settings
        self.base_url = ""  # set by the server once the socket is bound (OAuth api_domain)
        self.limiter = RateLimiter(
            s.burst_limit, s.oauth_burst_limit, s.daily_budget, s.budget_period_s or None
        )
        self.faults = FaultInjector(s.seed if s.fault_seed is None else s.fault_seed, _fault_settings(s))
        self.oauth = OAuthServer(
            s.oauth_client_id, s.oauth_client_secret, s.oauth_refresh_token, s.oauth_expires_in
        )
        self.auth = Authenticator(s.api_token, s.other_company_token or None, self.oauth)
        self.stats = Stats()
        self._started = time.monotonic()
        self._other: Any = None
        self._other_lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path.startswith("/_emulator/"):
            await self._control(scope, receive, send)
        elif path.rstrip("/") == "/oauth/token":
            await self._oauth_token(scope, receive, send)
        else:
            await self._pipedrive(scope, send)

    # ---- Pipedrive paths -------------------------------------------------------------------------------

    async def _pipedrive(self, scope: dict[str, Any], send: Send) -> None:
        method, path = scope["method"], scope["path"]
        headers = _headers(scope)
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        template = self._template(method, path)
        cred = self.auth.authenticate(headers, query)
        if isinstance(cred, AuthFailure):
            await self._unauthorized(send, path, template, cred)
            return
        company = self._company_for(cred)
        query = [(k, v) for k, v in query if k != "api_token"]  # a credential, not a filter for handle()
        cost = self._cost_of(method, path)
        if (way_there := self.faults.settings.way_there_s(time.monotonic() - self._started)) > 0:
            await asyncio.sleep(way_there)
        decision = self.limiter.admit(cred.token, cost, cred.company, _now(company), cred.oauth)
        left = _daily_requests_left(cred)
        base = decision.headers() + left
        if not decision.allowed:
            self.stats.record(template, 429, limited=decision.kind)
            if (way_back := self.faults.settings.way_back_s) > 0:
                await asyncio.sleep(way_back)  # a 429 takes the way back too
            await _send(send, 429, base + _date(company), rate_limited_body(decision.kind or BURST))
            return
        fault = self.faults.next((method, path, tuple(query)))
        if path == self.settings.down_path:  # drawn all the same: the other requests' faults stay as seeded
            fault = dataclasses.replace(fault, kind=faults.ERROR)
        if fault.delay_s > 0:
            await asyncio.sleep(fault.delay_s)
        throttled = dataclasses.replace(decision, remaining=0, retry_after=decision.reset).headers() + left
        status = await self._respond(send, company, method, path, query, base, throttled, fault)
        self.stats.record(template, status, tokens=cost, fault=fault.kind, limited=_injected(fault))

    async def _respond(
        self,
        send: Send,
        company: Any,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        base: Headers,
        throttled: Headers,
        fault: faults.Fault,
    ) -> int:
        """Send the (possibly faulty) response; returns the status the client saw.

        `base` are the rate-limit headers of this admitted request, `throttled` those a spurious 429 shows."""
        if fault.kind == faults.ERROR:
            status, content_type, body = faults.error_response(fault.detail)
            await _send(send, status, base + _date(company), body, content_type)
            return status
        if fault.kind == faults.THROTTLE:
            await _send(send, 429, throttled + _date(company), rate_limited_body(BURST))
            return 429
        if fault.kind == faults.STUCK:
            query = faults.first_page(query)
        status, body, extra = self._refused(method, path) or self._call_handle(company, method, path, query)
        if path == self.settings.empty_path and status == 200:
            body = faults.emptied(body)
        body = faults.raw_literals(body)
        body = self.faults.with_bom(body, fault)
        headers = base + list(extra.items()) + _date(company)
        if fault.kind == faults.HTML:
            await _send(send, 200, headers, faults.MAINTENANCE_HTML, "text/html; charset=utf-8")
            return 200
        if fault.kind == faults.DROP:
            await _send_partial(send, status, headers, body, faults.drop_point(body, fault.detail))
            return status
        if fault.kind == faults.MALFORMED:
            body = faults.truncate(body, fault.detail)
        await _send(send, status, headers, body)
        return status

    def _refused(self, method: str, path: str) -> tuple[int, bytes, dict[str, str]] | None:
        found = self._match(method, path)
        if not found:
            return None
        op, forbidden = found[0], access.forbidden_paths(self.settings.forbidden)
        plan, lapsed = self.settings.plan, self.settings.lapsed
        refused = access.refusal(op.path, getattr(op, "plan", None), plan, forbidden, lapsed)
        return (*refused, {}) if refused else None

    def _call_handle(
        self, company: Any, method: str, path: str, query: list[tuple[str, str]]
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            with company.lock:
                resp = self._handle(company, method, path, query)
        except Exception:  # a bug in the content layer must not look like a transport failure
            log.exception("handle() failed for %s %s", method, path)
            return 500, faults.error_body("An internal server error occurred"), {}
        return resp.status, resp.body, dict(resp.headers or {})

    async def _unauthorized(self, send: Send, path: str, template: str, failure: AuthFailure) -> None:
        # an OAuth request's 401 reports that access token's window under the OAuth burst limit (Pipedrive's
        # rate-limiting docs: the limit is per token, 80-480 for OAuth apps); it was the API token's
        decision = self.limiter.peek(
            failure.bearer or "<anonymous>", MAIN, _now(self.company), oauth=failure.bearer is not None
        )
        headers = decision.headers() + _date(self.company)
        if failure.reason == "expired":
            headers.append(("www-authenticate", 'Bearer error="invalid_token", error_description="expired"'))
        self.stats.record(template, 401)
        await _send(send, 401, headers, unauthorized_body(_api_of(path), failure.reason))

    def _company_for(self, cred: Credential) -> Any:
        if cred.company == MAIN:
            return self.company
        with self._other_lock:  # generated on first use: most runs never need it
            if self._other is None:
                self._other = type(self.company).generate(seed=self.settings.seed + 1, scale="tiny")
            return self._other

    def _template(self, method: str, path: str) -> str:
        try:
            found = self._match(method, path)
        except Exception:  # stats must never break a request
            found = None
        return found[0].path if found else UNMATCHED

    # ---- OAuth -----------------------------------------------------------------------------------------

    async def _oauth_token(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _send(send, 405, [], orjson.dumps({"success": False, "error": "Method not allowed"}))
            return
        form = dict(parse_qsl((await _read_body(receive)).decode("utf-8", "replace"), keep_blank_values=True))
        fault = self.faults.next(("POST", "/oauth/token"))
        if fault.kind == faults.ERROR:  # oauth.pipedrive.com has its outages too (5xx at `error_rate`)
            status, content_type, body = faults.error_response(fault.detail)
            await _send(send, status, [("cache-control", "no-store")], body, content_type)
            return
        status, body = self.oauth.grant(_headers(scope).get("authorization"), form, self.base_url)
        await _send(send, status, [("cache-control", "no-store")], self.faults.with_bom(body, fault))

    # ---- control ---------------------------------------------------------------------------------------

    async def _control(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        method, route = scope["method"], scope["path"][len("/_emulator/") :].rstrip("/")
        body = await _read_body(receive) if method == "POST" else b""
        try:
            status, payload = self._control_call(method, route, orjson.loads(body) if body else {})
        except (ValueError, KeyError, TypeError) as exc:
            status, payload = 400, {"error": f"{type(exc).__name__}: {exc}"}
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload, default=str)
        await _send(send, status, [], body)

    def _control_call(self, method: str, route: str, body: dict[str, Any]) -> tuple[int, Any]:
        company = self.company
        if (method, route) == ("GET", "counts"):
            with company.lock:
                return 200, company.counts()
        if method == "GET" and route.startswith("snapshot/"):
            table = route[len("snapshot/") :]
            if table not in company.tables:
                return 404, {"error": f"unknown table {table!r}", "tables": list(company.tables)}
            with company.lock:
                return 200, company.snapshot_json(table)
        if (method, route) == ("POST", "mutate"):
            with company.lock:
                return 200, company.mutate(body)
        simple: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "stats"): self.stats.as_dict,
            ("POST", "stats/reset"): lambda: (self.stats.reset(), {"ok": True})[1],
            ("GET", "settings"): self._settings_view,
            ("POST", "settings"): lambda: self.apply_settings(body),
            ("POST", "oauth/expire"): lambda: {"expired": self.oauth.expire_all()},
            ("POST", "ratelimit/reset"): lambda: (self.limiter.reset(), {"ok": True})[1],
            ("GET", "health"): lambda: {"ok": True, "now": _now(company).isoformat()},
        }
        action = simple.get((method, route))
        if action is None:
            return 404, {"error": f"no control endpoint {method} /_emulator/{route}"}
        return 200, action()

    def apply_settings(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change runtime settings (rate limits, faults, token lifetime); unknown keys raise ValueError."""
        unknown = set(changes) - EmulatorSettings.runtime_fields()
        if unknown:
            raise ValueError(f"not runtime settings: {sorted(unknown)}")
        changes = {name: _coerce(name, value) for name, value in changes.items()}
        if "plan" in changes:
            access.check_plan(changes["plan"])
        for name, value in changes.items():
            setattr(self.settings, name, value)
        limit_keys = ("burst_limit", "oauth_burst_limit", "daily_budget")
        limits = {k: v for k, v in changes.items() if k in limit_keys}
        if "budget_period_s" in changes:
            limits["budget_period_s"] = changes["budget_period_s"] or None
        self.limiter.configure(**limits)
        fault_changes = {k: v for k, v in changes.items() if k in {f.name for f in fields(FaultSettings)}}
        if "fault_seed" in changes:  # restarts the fault sequence; None means "the company seed"
            seed = changes["fault_seed"]
            fault_changes["fault_seed"] = self.settings.seed if seed is None else seed
        self.faults.configure(**fault_changes)
        if "oauth_expires_in" in changes:
            self.oauth.expires_in = int(changes["oauth_expires_in"])
        return self._settings_view()

    def _settings_view(self) -> dict[str, Any]:
        return {**self.settings.public(), "fault_seed": self.faults.seed, "base_url": self.base_url}


def rate_limited_body(kind: str) -> bytes:
    """429 body. The burst text follows Pipedrive's documented 429 ("Request over limit"); the daily-budget
    text is the emulator's own wording so that a client can tell the two apart from the body alone (the
    `x-daily-ratelimit-token-remaining: 0` header says the same)."""
    error = "Request over limit" if kind == BURST else "Daily token budget exceeded"
    return orjson.dumps(
        {
            "success": False,
            "error": error,
            "errorCode": 429,
            "error_info": ERROR_INFO,
            "data": None,
            "additional_data": None,
        }
    )


def _core_functions(
    handle: Callable[..., Any] | None, cost_of: Callable[[str, str], int] | None, match: Any
) -> tuple[Callable[..., Any], Callable[[str, str], int], Callable[[str, str], Any]]:
    if handle is None or cost_of is None:
        from . import api  # imported late so the transport layer can be used with a stand-in content layer

        handle, cost_of = handle or api.handle, cost_of or api.cost_of
    if match is None:
        from . import spec

        match = spec.match
    return handle, cost_of, match


def _coerce(name: str, value: Any) -> Any:
    """JSON numbers arrive as int or float; store them as the field's declared type."""
    if value is None:
        return None
    hint = typing.get_type_hints(EmulatorSettings)[name]
    kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    return kind(value)


def _fault_settings(s: EmulatorSettings) -> FaultSettings:
    return FaultSettings(**{f.name: getattr(s, f.name) for f in fields(FaultSettings)})


def _injected(fault: faults.Fault) -> str | None:
    return INJECTED if fault.kind == faults.THROTTLE else None


def _daily_requests_left(cred: Credential) -> Headers:
    # Documented as "requests left to POST/PUT endpoints today, api_token requests only"; the emulator serves
    # reads, so the POST/PUT allowance is never spent.
    return [] if cred.oauth else [("x-daily-requests-left", str(POST_PUT_DAILY_LIMIT))]


def _api_of(path: str) -> str:
    return "v2" if path.startswith("/api/v2/") else "v1"


def _now(company: Any) -> datetime:
    now = company.now()
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def _date(company: Any) -> Headers:
    return [("date", format_datetime(_now(company).astimezone(UTC), usegmt=True))]


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _read_body(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _start(status: int, headers: Headers, length: int, content_type: str) -> dict[str, Any]:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(length).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    return {"type": "http.response.start", "status": status, "headers": raw}


async def _send(
    send: Send, status: int, headers: Headers, body: bytes, content_type: str = "application/json"
) -> None:
    await send(_start(status, headers, len(body), content_type))
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_partial(send: Send, status: int, headers: Headers, body: bytes, cut: int) -> None:
    """Announce the full length, send `cut` bytes and return: the server then closes the connection."""
    await send(_start(status, headers, len(body), "application/json"))
    await send({"type": "http.response.body", "body": body[:cut], "more_body": True})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
