"""Pipedrive's two rate limits: a per-token burst window and a per-company daily token budget.

Public Pipedrive docs ("Rate limiting", token-based rate limits): every request spends its operation's
`x-token-cost` from a daily budget shared by the whole company that resets at the start of the next day, and
each token (api_token or OAuth access_token) may make at most N requests per rolling 2-second window. Both
limits answer HTTP 429. Every response carries `x-ratelimit-limit`, `x-ratelimit-remaining` and
`x-ratelimit-reset` for the burst window; the live API also sends `x-daily-ratelimit-token-limit` and
`x-daily-ratelimit-token-remaining` for the budget (observed by API users, not in the docs), which is what
lets a client tell the two 429s apart, together with the body text (see `app.py`).

The burst window runs on real monotonic time; the daily budget resets when the emulator's virtual day changes
(`Company.now()` crosses midnight UTC) or, when `budget_period_s` is set, every that many real seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

BURST = "burst"
DAILY = "daily"


@dataclass(frozen=True)
class Decision:
    """Outcome of one admission check plus the values of the rate-limit headers to send."""

    allowed: bool
    kind: str | None  # None when allowed, else BURST or DAILY
    limit: int
    remaining: int
    reset: int  # seconds until the burst window frees a slot
    daily_limit: int
    daily_remaining: int
    retry_after: int | None  # seconds, only on a refusal

    def headers(self) -> list[tuple[str, str]]:
        out = [
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(self.reset)),
            ("x-daily-ratelimit-token-limit", str(self.daily_limit)),
            ("x-daily-ratelimit-token-remaining", str(self.daily_remaining)),
        ]
        if self.retry_after is not None:
            out.append(("retry-after", str(self.retry_after)))
        return out


class _Budget:
    """Tokens spent by one company in the current budget period."""

    def __init__(self) -> None:
        self.period: object = None
        self.used = 0


class RateLimiter:
    """Thread-safe burst window per token and daily token budget per company."""

    def __init__(
        self,
        burst_limit: int = 100,
        oauth_burst_limit: int = 400,
        daily_budget: int = 1_500_000,
        budget_period_s: float | None = None,
        window_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst_limit = burst_limit
        self.oauth_burst_limit = oauth_burst_limit
        self.daily_budget = daily_budget
        self.budget_period_s = budget_period_s
        self.window_s = window_s
        self._clock = clock
        self._epoch = clock()
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._budgets: dict[str, _Budget] = {}

    def configure(self, **changes: object) -> None:
        """Change limits at runtime; counters are kept (use `reset` to clear them)."""
        with self._lock:
            for name, value in changes.items():
                if name not in ("burst_limit", "oauth_burst_limit", "daily_budget", "budget_period_s"):
                    raise ValueError(f"unknown rate-limit setting {name!r}")
                setattr(self, name, value)

    def reset(self) -> None:
        """Forget every burst window and every spent budget (tests share one emulator per module)."""
        with self._lock:
            self._windows.clear()
            self._budgets.clear()

    def admit(self, token: str, cost: int, company_key: str, now: datetime, oauth: bool = False) -> Decision:
        """Charge `cost` tokens and one burst slot if both limits allow it, else refuse without charging."""
        with self._lock:
            t = self._clock()
            window = self._window(token, t)
            budget = self._budget(company_key, now, t)
            limit = self.oauth_burst_limit if oauth else self.burst_limit
            if budget.used + cost > self.daily_budget:
                return self._decision(window, budget, limit, t, DAILY, self._budget_reset_s(now, t))
            if len(window) >= limit:
                return self._decision(window, budget, limit, t, BURST, self._window_reset_s(window, t))
            window.append(t)
            budget.used += cost
            return self._decision(window, budget, limit, t, None, None)

    def peek(self, token: str, company_key: str, now: datetime, oauth: bool = False) -> Decision:
        """Header values for a response that charges nothing (e.g. a 401)."""
        with self._lock:
            t = self._clock()
            window = self._window(token, t) if token in self._windows else deque()
            limit = self.oauth_burst_limit if oauth else self.burst_limit
            return self._decision(window, self._budget(company_key, now, t), limit, t, None, None)

    def _window(self, token: str, t: float) -> deque[float]:
        window = self._windows.setdefault(token, deque())
        while window and window[0] <= t - self.window_s:
            window.popleft()
        return window

    def _budget(self, company_key: str, now: datetime, t: float) -> _Budget:
        budget = self._budgets.setdefault(company_key, _Budget())
        period = self._period(now, t)
        if budget.period != period:
            budget.period, budget.used = period, 0
        return budget

    def _period(self, now: datetime, t: float) -> object:
        if self.budget_period_s:
            return int((t - self._epoch) // self.budget_period_s)
        return now.date()

    def _budget_reset_s(self, now: datetime, t: float) -> int:
        if self.budget_period_s:
            elapsed = (t - self._epoch) % self.budget_period_s
            return max(1, math.ceil(self.budget_period_s - elapsed))
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
        return max(1, math.ceil((midnight - now).total_seconds()))

    def _window_reset_s(self, window: deque[float], t: float) -> int:
        if not window:
            return math.ceil(self.window_s)
        return max(1, math.ceil(window[0] + self.window_s - t))

    def _decision(
        self, window: deque[float], budget: _Budget, limit: int, t: float, kind: str | None, retry: int | None
    ) -> Decision:
        return Decision(
            allowed=kind is None,
            kind=kind,
            limit=limit,
            remaining=max(0, limit - len(window)),
            reset=self._window_reset_s(window, t),
            daily_limit=self.daily_budget,
            daily_remaining=max(0, self.daily_budget - budget.used),
            retry_after=retry,
        )
