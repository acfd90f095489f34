"""Defaults of the connector, in one place. Every value can be overridden through the source's arguments."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import SettingError, setting_place

COMPANY_URL = "https://{company_domain}.pipedrive.com"
OAUTH_TOKEN_URL = "https://oauth.pipedrive.com/oauth/token"
# a token, or OAuth: a TOML section or JSON in one value (`oauth`), or its fields one by one (env variables)
CREDENTIAL_KEYS = ("api_token", "oauth", "oauth.refresh_token", "oauth.access_token")

PAGE_SIZE = 500  # v2 and most v1 lists accept up to 500 per page
OFFSET_OVERLAP_SHARE = 0.01  # v1 start/limit pages re-read 1% (at least one record) to survive deletions
DEAL_IDS_PER_REQUEST = 100  # /deals/products and /deals/installments take at most 100 deal ids

# a cursor second this far behind a read's start is settled: every record stamped in it was readable
# (`fetching.settled_before`); a minute is far more than a write takes to commit
SETTLED_AFTER_S = 60

# lists with neither filter nor sort (call logs, projects, tasks, phases per board): a no-change run should
# not page through them all, so they are re-read in full at most this often (`Entity.full_read_hours`)
FULL_READ_INTERVAL_HOURS = 24.0

DEFAULT_MAX_TABLE_NESTING = 1  # top-level lists become child tables; anything deeper is kept as JSON

# pages a run holds at once, buffered, in flight or waiting for the rate limiter (`concurrency.FetchPool`):
# no more requests than this are ever in flight, so more `workers` than this would never be busy
RUN_BUFFERED_PAGES = 20
HIGHEST_BURST_LIMIT = 480  # requests per 2 s of Pipedrive's highest plan (OAuth); API tokens get 20 to 120


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and retry policy of the shared HTTP client."""

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    max_attempts: int = 6  # one try plus five retries on transient failures
    backoff_base_s: float = 0.5  # first retry waits about this long, then doubles
    backoff_max_s: float = 30.0
    max_rate_limit_wait_s: float = 120.0  # a 429 asking for a longer wait means the daily budget is gone
    max_rate_limit_attempts: int = 20


@dataclass(frozen=True)
class Rule:
    """What a numeric setting of the source accepts: `accepted` as the refusal says it, `ok` the test."""

    accepted: str
    ok: Callable[[float], bool]


def _at_least_one(value: float) -> bool:
    return value >= 1  # taken as 1 before, without a word: a run with settings other than the ones asked for


def _finite_from_zero(value: float) -> bool:
    return math.isfinite(value) and value >= 0  # inf: never (a full read), or capped at backoff_max_s


# The numeric settings of `pipedrive_source` and what each accepts (None, not set: its default applies).
# README's settings section lists the same ranges.
RULES: dict[str, Rule] = {
    "page_size": Rule(f"between 1 and {PAGE_SIZE}", lambda value: 1 <= value <= PAGE_SIZE),
    "max_attempts": Rule("at least 1", _at_least_one),
    "workers": Rule(
        f"between 1 and {RUN_BUFFERED_PAGES} (requests in flight; a run has no more)",
        lambda value: 1 <= value <= RUN_BUFFERED_PAGES,
    ),
    "backoff_base_s": Rule("a number of seconds, 0 or more", _finite_from_zero),
    "full_read_interval_hours": Rule("a number of hours, 0 or more", _finite_from_zero),
    "burst_limit": Rule(
        f"between 1 and {HIGHEST_BURST_LIMIT} (requests per 2 seconds; Pipedrive's highest plan allows "
        f"{HIGHEST_BURST_LIMIT})",
        lambda value: 1 <= value <= HIGHEST_BURST_LIMIT,
    ),
    "daily_token_budget": Rule("at least 1 (tokens a day)", _at_least_one),
    "max_budget_share": Rule("above 0 and at most 1 (0.5: half the daily budget)", lambda v: 0 < v <= 1),
}


# what the `entities` setting (and the pipeline script's `--entities`) accepts, as a refusal says it
SOME_TABLES = "one or more table names (every default table when not given)"
# the `entities` setting given one string, which dlt hands on as it is (a JSON string from the environment,
# a TOML string): a list, as for every list setting, rather than a guess at what the string holds
A_LIST = 'a list of table names, ["deals", "persons"] (in the environment the same JSON, unquoted)'


def check_settings(section: Callable[[], str | None] = lambda: None, **values: float | None) -> None:
    """Refuse a value its `RULES` entry does not accept, naming the setting under `section()` (a named
    company's pipeline, asked only for the message). A bool is no
    number here, though Python counts it one."""
    for name, value in values.items():
        rule = RULES[name]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and not (number and rule.ok(value)):
            raise SettingError(name, value, rule.accepted, setting_place(name, section()))


# The type of a boolean setting of `pipedrive_source`: true or false, None when not set (its default applies).
# Any to dlt, which then hands the value on as set, for `flag` to check: typed bool, dlt took "yes", "1", "t"
# and a TOML 2 for true and "no" or 0 for false without a word (and refused "on" and " true").
Flag = Any


def flag(name: str, value: Flag, default: bool, section: Callable[[], str | None] = lambda: None) -> bool:
    """A boolean setting's value: `default` when not set (None), else true or false (TOML's, or as text, the
    environment's, in any case); anything else is refused, naming the setting under `section()` as
    `check_settings` does."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise SettingError(name, value, "true or false", setting_place(name, section()))


def check_start_date(
    start: datetime | None, now: datetime, clock: str, section: Callable[[], str | None] = lambda: None
) -> None:
    """Refuse a `start_date` after `now` by `clock` (a first run would load nothing, and its cursor would
    wait there), naming the setting under `section()` as `check_settings` does."""
    if start is not None and start > now:
        raise SettingError(
            "start_date",
            f"{start:%Y-%m-%d %H:%M:%S} UTC",
            f"a moment not in the future ({clock} says {now:%Y-%m-%d %H:%M:%S} UTC; a later start loads "
            "nothing until then): a past date, or not set for the whole history",
            setting_place("start_date", section()),
        )
