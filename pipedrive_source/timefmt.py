"""Pipedrive's timestamp formats and conversions between them.

v2 and the newer v1 endpoints write RFC3339 (`2025-01-01T10:20:00Z`, leads with `.000Z`), classic v1 writes
`2025-01-01 10:20:00` (UTC). Cursor values stay in the entity's own format (so they compare as strings with
the records); `updated_since` wants RFC3339 without fractional seconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime

import pendulum

from .errors import SettingError, setting_place

FORMATS = {
    "rfc3339": "%Y-%m-%dT%H:%M:%SZ",
    "rfc3339_ms": "%Y-%m-%dT%H:%M:%S.000Z",
    "v1": "%Y-%m-%d %H:%M:%S",
}

# `start_date`: an ISO date, or date and time with an optional offset. Nothing looser: a lenient parser read
# `01/02/2025` as 2 January, `5` as the 5th of this month and `10:00` as today, each without a word.
_START_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}.*)?")  # the rest: `datetime.fromisoformat`


_DAY, _WEEKDAY = (
    "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)",
    "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)",
)
_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_CLOCK = r"\d{2}:\d{2}:\d{2}"
# RFC 7231 section 7.1.1.1: IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient must accept;
# all three are UTC ("GMT", asctime without a zone)
_HTTP_DATE = re.compile(
    rf"{_DAY}, \d{{2}} {_MONTH} \d{{4}} {_CLOCK} GMT"
    rf"|{_WEEKDAY}, \d{{2}}-{_MONTH}-\d{{2}} {_CLOCK} GMT"
    rf"|{_DAY} {_MONTH} [ \d]\d {_CLOCK} \d{{4}}"
)


def http_date(value: str) -> datetime | None:
    """An HTTP `Date` header as an aware UTC datetime; None for anything RFC 7231 does not allow.

    `email.utils.parsedate_to_datetime` also reads mail dates: without a zone (asctime, `-0000`, an unknown
    zone name) it returns a naive datetime, which `.astimezone` then took for the local time, putting the
    server's clock off by the machine's UTC offset. The HTTP forms are all UTC; other forms are refused
    rather than guessed."""
    if not _HTTP_DATE.fullmatch(value.strip()):
        return None
    try:
        return parsedate_to_datetime(value).replace(tzinfo=UTC)
    except (TypeError, ValueError):  # matched the form but not a real date (31 Feb)
        return None


def parse(value: str | date | datetime) -> datetime:
    """Any timestamp Pipedrive writes, an ISO date or a datetime -> aware UTC datetime."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    parsed = pendulum.parse(str(value).strip(), tz="UTC", strict=False)
    if not isinstance(parsed, datetime):
        raise ValueError(f"not a timestamp: {value!r}")
    return datetime.fromtimestamp(parsed.timestamp(), UTC)


def render(moment: datetime, time_format: str) -> str:
    return moment.astimezone(UTC).strftime(FORMATS[time_format])


def rfc3339(value: str | datetime) -> str:
    """For `updated_since` / `updated_until`: whole seconds, `Z` suffix."""
    return render(parse(value), "rfc3339")


def start_date_value(
    start_date: str | date | datetime | None, section: Callable[[], str | None] = lambda: None
) -> datetime | None:
    """Validate the `start_date` setting once; a clear error names it (under `section()`, a named company's
    pipeline, asked only for the message) when it cannot be read."""
    if start_date is None:
        return None
    try:
        if isinstance(start_date, date):  # a TOML date or datetime, or one passed from Python
            return parse(start_date)
        text = str(start_date).strip()
        if not _START_DATE.fullmatch(text):
            raise ValueError(text)
        return parse(datetime.fromisoformat(text))  # without an offset: UTC, as Pipedrive's clock
    except (ValueError, TypeError, OverflowError):  # "" too: it loaded the whole history, without a word
        raise SettingError(
            "start_date",
            str(start_date)[:40],
            "a date, YYYY-MM-DD, or an RFC3339 timestamp such as 2025-01-01T10:20:00Z (without an offset: "
            "UTC)",
            setting_place("start_date", section()),
        ) from None
