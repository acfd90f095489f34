"""Defaults of the connector, in one place. Every value can be overridden through the source's arguments."""

from __future__ import annotations

from dataclasses import dataclass

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
