"""Time helpers for the emulator.

All record timestamps are stored as integer epoch seconds (UTC): cheap to compare, index and sort.
They are formatted only when a record is rendered: RFC3339 (`2025-01-01T10:20:00Z`) for API v2 and the
newer v1 endpoints (leads, lead labels, call logs), `YYYY-MM-DD HH:MM:SS` for the classic v1 endpoints.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

DEFAULT_START = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
DAY = 86_400

# Pipedrive wants whole seconds: `updated_since` "must be given without fractional seconds".
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(Z|[+-]\d{2}:\d{2})$")


# Rendering formats millions of timestamps: strftime costs ~1.6 us each, these tables make it ~0.2 us.
_EPOCH = date(1970, 1, 1)
_DAYS: dict[int, str] = {}
_HMS: tuple[str, ...] = ()


def _day(days: int) -> str:
    text = _DAYS.get(days)
    if text is None:
        text = _DAYS[days] = (_EPOCH + timedelta(days=days)).isoformat()
    return text


def _split(ts: int) -> tuple[str, str]:
    """(`YYYY-MM-DD`, `HH:MM:SS`) of epoch seconds, UTC."""
    global _HMS
    if not _HMS:  # assigned whole: a thread never sees it half built (two emulators generating at once)
        _HMS = tuple(f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60))
    days, secs = divmod(int(ts), DAY)
    return _day(days), _HMS[secs]


def rfc3339(ts: int | None) -> str | None:
    if ts is None:
        return None
    day, hms = _split(ts)
    return f"{day}T{hms}Z"


def rfc3339_ms(ts: int | None) -> str | None:
    """The millisecond flavour the newer v1 endpoints (leads, labels, call logs) use."""
    if ts is None:
        return None
    day, hms = _split(ts)
    return f"{day}T{hms}.000Z"


def v1_time(ts: int | None) -> str | None:
    if ts is None:
        return None
    day, hms = _split(ts)
    return f"{day} {hms}"


def iso_date(ts: int | None) -> str | None:
    if ts is None:
        return None
    return _day(int(ts) // DAY)


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
