"""The slot where a shared rate limiter plugs into the HTTP client.

The client calls `acquire(cost)` before every request and `observe(status, headers)` after every response,
from any thread. A limiter that paces requests by Pipedrive's burst window and daily token budget (issue 5)
only has to implement these two methods; the client itself still handles an unexpected 429 by waiting for
`x-ratelimit-reset`, so pacing is an optimisation, never a correctness requirement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class RateLimiter(Protocol):
    def acquire(self, cost: int) -> None:
        """Block until a request costing `cost` tokens may be sent."""

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from a response's `x-ratelimit-*` / `x-daily-ratelimit-*` headers."""


class NoLimiter:
    """Sends every request at once; 429s are handled by the client's wait-and-retry."""

    def acquire(self, cost: int) -> None:
        return None

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        return None
