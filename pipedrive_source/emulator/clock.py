"""Time helpers for the emulator.

All record timestamps are stored as integer epoch seconds (UTC): cheap to compare, index and sort.
They are formatted only when a record is rendered: RFC3339 (`2025-01-01T10:20:00Z`) for API v2 and the
newer v1 endpoints (leads, lead labels, call logs), `YYYY-MM-DD HH:MM:SS` for the classic v1 endpoints.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

DEFAULT_START = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
DAY = 86_400

# Pipedrive wants whole seconds: `updated_since` "must be given without fractional seconds".
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(Z|[+-]\d{2}:\d{2})$")


def rfc3339(ts: int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_ms(ts: int | None) -> str | None:
    """The millisecond flavour the newer v1 endpoints (leads, labels, call logs) use."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def v1_time(ts: int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso_date(ts: int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def to_datetime(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def parse_rfc3339(text: str) -> int | None:
    """Epoch seconds of an RFC3339 timestamp without fractional seconds; None when malformed."""
    m = _RFC3339.match(text)
    if not m:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(dt.timestamp())


def parse_date(text: str) -> int | None:
    """Epoch seconds of midnight UTC of a `YYYY-MM-DD` date; None when malformed."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())
    except ValueError:
        return None
