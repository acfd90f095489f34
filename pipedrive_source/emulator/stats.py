"""Request counters served by `GET /_emulator/stats` (not part of Pipedrive).

`per_second` counts the requests that arrived in each second since the last reset: how evenly a client
kept to its plan's rate (benchmarks read it; its length is the seconds from the reset to the last request).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

from .faults import KINDS
from .ratelimit import BURST, DAILY

INJECTED = "injected"


class Stats:
    """Thread-safe counters per endpoint path template and status, tokens spent, 429s and faults."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests: Counter[str] = Counter()
            self._tokens: Counter[str] = Counter()
            self._statuses: defaultdict[str, Counter[str]] = defaultdict(Counter)
            self._status: Counter[str] = Counter()
            self._limited: Counter[str] = Counter({BURST: 0, DAILY: 0, INJECTED: 0})
            self._faults: Counter[str] = Counter(dict.fromkeys(KINDS, 0))
            self._since = time.monotonic()
            self._per_second: list[int] = []

    def record(
        self,
        template: str,
        status: int,
        tokens: int = 0,
        limited: str | None = None,
        fault: str | None = None,
    ) -> None:
        """Count one Pipedrive request; `tokens` is what the rate limiter charged for it."""
        second = int(time.monotonic() - self._since)
        with self._lock:
            if second >= len(self._per_second):
                self._per_second.extend([0] * (second + 1 - len(self._per_second)))
            self._per_second[second] += 1
            self._requests[template] += 1
            self._tokens[template] += tokens
            self._statuses[template][str(status)] += 1
            self._status[str(status)] += 1
            if limited:
                self._limited[limited] += 1
            if fault:
                self._faults[fault] += 1

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            return {
                "total_requests": sum(self._requests.values()),
                "tokens_spent": sum(self._tokens.values()),
                "requests": dict(self._requests),
                "tokens": dict(self._tokens),
                "statuses_by_endpoint": {k: dict(v) for k, v in self._statuses.items()},
                "statuses": dict(self._status),
                "rate_limited": dict(self._limited),
                "faults": dict(self._faults),
                "per_second": list(self._per_second),
            }
