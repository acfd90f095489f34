"""Deterministic fault injection: 5xx, spurious 429, latency, dropped connections, malformed bodies, a
server that ignores the paging parameters (answers the first page again, and its cursor again), and a 200
whose body is an HTML page (a proxy's or a maintenance page) instead of JSON.

Raw literals: a record value that is the string `RAW_JSON + literal` ("\u0000json:1e999" in the JSON of a
mutate `update`) is served as the bare JSON text `literal` (`1e999`, `NaN`, 400 digits, or a string such as
`"a\\ud800b"` with a lone surrogate escape), in every Pipedrive answer (`raw_literals`). orjson renders every
body and writes no such number or escape, which a backend other than orjson may; the control snapshots keep
the marker string. A value `RAW_LATIN1 + literal` is served the same way with each character of `literal`
as one byte (its Latin-1 code), which is not UTF-8 beyond U+007F: `RAW_LATIN1 + '"Caf\\xe9"'` is the bytes
`"Caf\\xe9"`, text a user pasted from a Latin-1 source, or a proxy re-encoded. `bom_rate`: a share of the
answers (the OAuth token endpoint's too) starts with a UTF-8 byte order mark, as some proxies and gateways
add (decided by a draw every request makes anyway: the same seed draws the same faults).

Off by default. One seeded RNG is consulted for every admitted Pipedrive request in arrival order, always with
the same number of draws per request, so the same seed and the same request sequence give the same faults
whatever the rates are changed to in between (changing `seed` at runtime restarts the sequence).

Concurrent requests arrive in whatever order their threads run, so which request draws which fault is not
fixed, and at 20% faults one of a few thousand requests now and then drew six in a row: a client that gives
up after six attempts then failed a run that was meant to show it riding transient faults out. A transient
fault passes: `max_in_a_row` caps the faults one request (method, path and query) gets in a row, the
answer after them is normal (0: no cap, for faults that persist).
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Hashable
from dataclasses import asdict, dataclass

import orjson

ERROR = "error"
THROTTLE = "throttle"
DROP = "drop"
MALFORMED = "malformed"
STUCK = "stuck"  # `cursor` and `start` ignored: the first page again, with the same `next_cursor`
HTML = "html"
KINDS = (ERROR, THROTTLE, DROP, MALFORMED, STUCK, HTML)  # new kinds last: old seeds draw the same faults
PAGING_PARAMS = frozenset({"cursor", "start"})
RAW_JSON = "\x00json:"
RAW_LATIN1 = "\x00latin1:"
_RAW_MARKS = (b'"\\u0000json:', b'"\\u0000latin1:')  # how orjson writes the markers' start
# the marker, then the literal as a JSON string escapes it
_RAW_VALUE = re.compile(rb'"\\u0000(json|latin1):((?:[^"\\]|\\.)*)"')
BOM = b"\xef\xbb\xbf"
QUEUE_PERIOD_S = 3.0  # not a multiple of the 2-second burst window

BAD_GATEWAY_HTML = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
)
MAINTENANCE_HTML = (
    b"<!DOCTYPE html><html><head><title>Scheduled maintenance</title></head>"
    b"<body><h1>We'll be back shortly</h1></body></html>"
)
ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."


@dataclass
class FaultSettings:
    error_rate: float = 0.0  # share of requests answered 500/502/503
    throttle_rate: float = 0.0  # share answered with a spurious burst 429
    drop_rate: float = 0.0  # share whose connection is closed mid-body
    malformed_rate: float = 0.0  # share answered 200 with a truncated JSON body
    stuck_rate: float = 0.0  # share answered as if without `cursor` / `start` (STUCK)
    html_rate: float = 0.0  # share answered 200 with an HTML page
    # share of answers (not a 5xx, 429 or a data endpoint's 401; the OAuth token endpoint's too) starting
    # with a UTF-8 byte order mark
    bom_rate: float = 0.0
    # round trip of every request: half of `latency_ms` passes before the rate limiter counts the request
    # (the way there), the other half plus the jitter after it (processing and the way back)
    latency_ms: float = 0.0
    jitter_ms: float = 0.0  # plus a uniform random delay in [0, jitter_ms)
    # a queue at Pipedrive's edge that builds and drains: in the first half of every QUEUE_PERIOD_S a
    # request waits this long more before the rate limiter counts it, the way there is then longer than the
    # way back, and a request sent a window after a queued one can be counted less than a window after it
    queue_ms: float = 0.0
    max_in_a_row: float = 0.0  # faults one request gets in a row before a normal answer (0: no cap)

    @property
    def way_back_s(self) -> float:
        return self.latency_ms / 2000.0

    def way_there_s(self, uptime_s: float) -> float:
        queued = self.queue_ms / 1000.0 if uptime_s % QUEUE_PERIOD_S < QUEUE_PERIOD_S / 2 else 0.0
        return self.way_back_s + queued


@dataclass(frozen=True)
class Fault:
    kind: str | None  # one of KINDS, or None for a normal response
    delay_s: float
    detail: float  # uniform [0, 1): picks the 5xx status or where to cut the body


class FaultInjector:
    """Seeded, thread-safe source of per-request fault decisions."""

    def __init__(self, seed: int, settings: FaultSettings | None = None) -> None:
        self.settings = settings or FaultSettings()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.seed = seed
        self._streaks: dict[Hashable, int] = {}  # requests whose last answers were faults: how many

    def configure(self, **changes: object) -> None:
        with self._lock:
            for name, value in changes.items():
                if name == "fault_seed":
                    self.seed = int(value)  # type: ignore[call-overload]
                    self._rng = random.Random(self.seed)
                    self._streaks.clear()
                elif hasattr(self.settings, name):
                    setattr(self.settings, name, float(value))  # type: ignore[arg-type]
                else:
                    raise ValueError(f"unknown fault setting {name!r}")

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self.settings), "fault_seed": self.seed}

    def next(self, request: Hashable) -> Fault:
        """Decide the fate of the next request (three draws, whatever the settings); `request` identifies it
        for `max_in_a_row`."""
        with self._lock:
            pick, jitter, detail = self._rng.random(), self._rng.random(), self._rng.random()
            s = self.settings
            kind = self._streak(request, _kind(pick, s))
        return Fault(kind, s.way_back_s + jitter * s.jitter_ms / 1000.0, detail)

    def with_bom(self, body: bytes, fault: Fault) -> bytes:
        """`body`, after a UTF-8 byte order mark for a share of `bom_rate` of the answers (a data endpoint's
        or the OAuth token endpoint's): decided by the draw `fault.detail` every request makes anyway, so
        the seed draws the same faults."""
        return BOM + body if fault.detail < self.settings.bom_rate else body

    def _streak(self, request: Hashable, kind: str | None) -> str | None:
        """`kind`, or None where it would exceed the request's faults in a row (under the lock)."""
        cap = int(self.settings.max_in_a_row)
        if cap <= 0:
            return kind
        streak = self._streaks.pop(request, 0)
        if kind is None or streak >= cap:
            return None
        self._streaks[request] = streak + 1
        return kind


def _kind(pick: float, s: FaultSettings) -> str | None:
    edge = 0.0
    rates = (s.error_rate, s.throttle_rate, s.drop_rate, s.malformed_rate, s.stuck_rate, s.html_rate)
    for kind, rate in zip(KINDS, rates, strict=True):
        edge += rate
        if pick < edge:
            return kind
    return None


def error_response(detail: float) -> tuple[int, str, bytes]:
    """A Pipedrive-like 5xx: (status, content type, body).

    500 uses the v1 spec's internal-error body (e.g. CallLogInternalErrorResponse); 502 is the HTML page a
    load balancer answers with, so a client that parses every error body as JSON is caught out; 503 is JSON.
    """
    if detail < 0.5:
        return 500, "application/json", error_body("An internal server error occurred")
    if detail < 0.75:
        return 502, "text/html", BAD_GATEWAY_HTML
    return 503, "application/json", error_body("Service temporarily unavailable")


def truncate(body: bytes, detail: float) -> bytes:
    """Cut a JSON body somewhere strictly inside it so it can never parse."""
    if len(body) < 2:
        return b"{"
    return body[: 1 + int(detail * (len(body) - 1))]


def raw_literals(body: bytes) -> bytes:
    """The body with every marked value (`RAW_JSON`, `RAW_LATIN1`) replaced by its bare literal."""
    return _RAW_VALUE.sub(_literal, body) if any(mark in body for mark in _RAW_MARKS) else body


def _literal(match: re.Match[bytes]) -> bytes:
    marker, escaped = match.group(1, 2)
    if marker == b"latin1":
        return str(orjson.loads(b'"' + escaped + b'"')).encode("latin-1")
    if b"\\" not in escaped:
        return escaped
    # a literal with quotes or backslashes, say the string `"\ud800"` (a lone surrogate escape)
    return str(orjson.loads(b'"' + escaped + b'"')).encode()


def emptied(body: bytes) -> bytes:
    """A list's 200 body with no items and no page after it (`--empty-path`: a field list without even the
    built-in fields, which every company has)."""
    doc = orjson.loads(body)
    doc["data"] = []
    extra = doc.get("additional_data")
    if isinstance(extra, dict):
        if "next_cursor" in extra:
            extra["next_cursor"] = None
        pagination = extra.get("pagination") if isinstance(extra.get("pagination"), dict) else extra
        if "more_items_in_collection" in pagination:
            pagination["more_items_in_collection"] = False
            pagination.pop("next_start", None)
    return orjson.dumps(doc)


def first_page(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The query of a STUCK request: its paging parameters dropped."""
    return [(name, value) for name, value in query if name not in PAGING_PARAMS]


def drop_point(body: bytes, detail: float) -> int:
    """How many body bytes to send before closing the connection (always fewer than all)."""
    return int(detail * len(body))


def error_body(message: str) -> bytes:
    return orjson.dumps(
        {"success": False, "error": message, "error_info": ERROR_INFO, "data": None, "additional_data": None}
    )
