"""The shared rate limiter: paces every request of a run by Pipedrive's burst window and daily token budget.

The client calls `acquire(cost)` before every request, `written()` (if the limiter has it) once the request
is on the wire, and `observe(status, headers)` after every attempt (status 0 when no response came), from
any thread, always in the same thread for one request. Any object with `acquire` and `observe` fits the
slot; `NoLimiter` sends at once and leaves 429s to the client's waits.

`PlanLimiter` (the default of the source) knows both of Pipedrive's limits:
- burst: at most `burst_limit` requests per rolling 2-second window per token. It keeps when the last
  window's requests took their slots and makes a request wait until a slot is free. The server counts a
  request when it arrives, somewhere between its send and its answer: a slot counts from `acquire`, then
  from the moment the client reports the request written to the socket (`written`; a thread may wait for
  the GIL in between while the extract thread works), and once the answer is in from that answer less
  the quickest round trip seen (`_slot_start` says why that is safe), plus `safety_s`. Taking the middle
  of the round trip for the arrival, as the limiter once did, was early whenever Pipedrive (or the
  emulator on a busy machine) held a request in a queue before counting it: burst 429s. Counting from
  the answer itself is never early but kept every slot a round trip longer than needed (4% of the plan
  at 100 ms). A request without a response counts from the moment it failed.
  Within the window, sends are spaced evenly after the first window's burst (`_spacing_delay` says why).
  The plan's value is an upper bound; the `x-ratelimit-limit`
  header lowers it (without a plan value, one request goes first and its headers tell the limit, which
  then sizes the first window's burst), and
  `x-ratelimit-remaining` reveals requests other integrations made with the same token in the window,
  which are left to them. A burst 429 (should one happen anyway) pauses every sender until
  `x-ratelimit-reset` and lowers the limit by one for a while (`_current_penalty`).
- daily budget: every request spends its `x-token-cost` from the company's daily budget
  (`x-daily-ratelimit-token-limit` / `-remaining` headers, or the plan's `daily_token_budget`). Before a
  request that would overdraw what is left (minus what is in flight), or the run's own cap
  (`max_budget_share` of the daily budget: other integrations share it), `acquire` raises
  `BudgetExhausted` instead of sending; the engine then stops the run cleanly.

A 429 is told apart by `classify_429`: the daily kind leaves fewer daily tokens than the request costs (or
says so in its body, or asks to wait longer than a burst window could); anything else is a burst 429.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .errors import RateLimitExhausted
from .timefmt import http_date

BURST = "burst"
DAILY = "daily"
WINDOW_S = 2.0  # Pipedrive's burst window
REORDER_S = 0.02  # slack on either side of a request's possible arrival (Pipedrive's own time varies)
PENALTY_DECAY_S = 60.0  # after a burst 429, how long the limit stays lowered by one
LOWEST_BURST_LIMIT = 20  # the smallest API-token plan: the assumption until a response tells the real one


class RateLimiter(Protocol):
    def acquire(self, cost: int) -> None:
        """Block until a request costing `cost` tokens may be sent (or raise `BudgetExhausted`)."""

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from a response's `x-ratelimit-*` / `x-daily-ratelimit-*` headers (status 0: no response)."""


class NoLimiter:
    """Sends every request at once; 429s are handled by the client's wait-and-retry."""

    def acquire(self, cost: int) -> None:
        return None

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        return None


class BudgetExhausted(RateLimitExhausted):
    """The daily token budget, or this run's share of it, would be overdrawn by the next request."""

    def __init__(self, message: str, *, reason: str, resets_at: datetime | None) -> None:
        super().__init__(message)
        self.reason = reason  # DAILY (the company's budget) | "share" (this run's cap)
        self.resets_at = resets_at


@dataclass(frozen=True)
class Plan:
    """What the account allows. None means: learn it from the response headers. Values are checked where
    they are set (`settings.RULES`, by the source)."""

    burst_limit: int | None = None  # requests per 2 s per token (API token 20/40/100/120, OAuth 80..480)
    daily_token_budget: int | None = None  # 30,000 x plan multiplier x seats
    max_budget_share: float = 1.0  # share of the daily budget this run may spend
    window_s: float = WINDOW_S
    safety_s: float = 0.01  # added to the window (see `PlanLimiter`)
    tolerance_s: float = 0.2  # how far sends may bunch up after the first window (see `PlanLimiter`)


@dataclass
class LimiterStats:
    """What pacing did: waits, 429s by kind, tokens this run spent (admitted requests only)."""

    waits: int = 0
    wait_s: float = 0.0
    burst_429s: int = 0
    daily_429s: int = 0
    spent: int = 0
    foreign_seen: int = 0  # most requests of other clients seen in one window (same token)
    limits_seen: dict[str, int] = field(default_factory=dict)


class PlanLimiter:
    """Thread-safe pacing by burst window and daily budget; see the module docstring."""

    def __init__(
        self,
        plan: Plan | None = None,
        clock: Callable[[], float] = time.monotonic,
        now_utc: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.plan = plan or Plan()
        self.stats = LimiterStats()
        self._clock = clock
        self._now_utc = now_utc
        self._cond = threading.Condition()
        self._sends: list[float] = []  # sorted: send times of requests in flight, response times of others
        self._writes: list[float] = []  # when requests of the last two windows were written (sorted)
        self._answered: dict[float, float] = {}  # write time -> when its answer (or failure) came
        self._slowest = 0.0  # longest round trip seen (up to a window): how early a late arrival was written
        self._header_limit: int | None = None
        self._penalty = 0  # lowered after a burst 429 the headers did not predict
        self._penalized_at = 0.0
        self._quickest = math.inf  # the shortest round trip seen, from a write to its answer
        self._answers_since: float | None = None
        self._foreign = _RecentExtreme(largest=True)  # others' requests in a window, by when seen
        self._paused_until = 0.0
        self._daily_limit: int | None = None
        self._daily_left: int | None = None  # estimate: last reported, minus what was sent after that
        self._daily_seen_at = float("-inf")  # send time of the newest-sent request answered with a figure
        self._daily_figures = _RecentExtreme(largest=False)  # daily figures, by when answered
        self._inflight: dict[int, tuple[float, int]] = {}  # request number -> (send time, cost)
        self._written: dict[int, float] = {}  # request number -> when it was written to the socket
        self._numbers = 0
        self._server_offset: timedelta | None = None  # server clock - our clock (Date header)
        self._local = threading.local()
        self.waiting = 0  # requests waiting for a burst slot now (the API is the bottleneck)
        self._credit: float | None = None  # sends allowed now by the spacing (None: the first window)
        self._credited_at = 0.0

    # ---- the slot ------------------------------------------------------------------------------------
    def acquire(self, cost: int) -> None:
        with self._cond:
            waited = self._wait_for_slot()
            self._check_budget(cost)  # after the wait: answers that came meanwhile know more
            sent_at = self._clock()
            self._sends.append(sent_at)
            self._numbers += 1
            self._inflight[self._numbers] = (sent_at, cost)
            if self._daily_left is not None:
                self._daily_left -= cost
            self.stats.spent += cost
            if waited > 0:
                self.stats.waits += 1
                self.stats.wait_s += waited
            self._local.sent = self._numbers

    def written(self) -> None:
        """This thread's request was just written to the socket: its burst slot counts from now."""
        number = getattr(self._local, "sent", None)
        with self._cond:
            known = self._inflight.get(number)
            if known is not None and number not in self._written:
                self._written[number] = now = self._clock()
                self._restamp(known[0], now)
                self._forget_writes(now - 2 * (self.plan.window_s + self._slowest))
                self._writes.append(now)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        number = getattr(self._local, "sent", None)
        self._local.sent = None
        with self._cond:
            known = self._inflight.pop(number, None)
            sent_at, cost = known or (self._clock(), 0)
            stamp = answered = sent_at
            if known is not None:
                written = self._written.pop(number, None)
                stamp, answered = written or sent_at, self._clock()
                self._restamp(stamp, answered if status == 0 else self._slot_start(stamp, answered))
                if written is not None:
                    self._answered[written] = answered
                    if status:  # capped: it bounds the writes kept, and scanned for each answer
                        self._slowest = min(self.plan.window_s, max(self._slowest, answered - written))
            if status in (0, 401, 429):
                # not admitted: Pipedrive charges nothing (a 401, an expired OAuth token: no company to
                # charge). Counted, every request that hit an expiry was spent twice, against the run's share
                self.stats.spent -= cost
                if self._daily_left is not None:
                    self._daily_left += cost
            self._learn_date(headers)
            self._learn_daily(headers, sent_at)
            self._learn_burst(headers, stamp, answered, status)
            if status == 429:
                self._on_429(headers, cost)
            self._cond.notify_all()

    # ---- burst window ---------------------------------------------------------------------------------
    @property
    def burst_limit(self) -> int:
        """Requests this run may send per window now."""
        limit = self.plan.burst_limit or self._header_limit or LOWEST_BURST_LIMIT
        if self._header_limit:
            limit = min(limit, self._header_limit)
        limit -= self._foreign_share()
        return max(1, limit - self._current_penalty())

    @property
    def saturated(self) -> bool:
        """Whether the burst window is (nearly) full: more concurrency would only queue here."""
        with self._cond:
            if self.waiting:
                return True
            horizon = self._clock() - self.plan.window_s
            recent = sum(1 for t in self._sends if t > horizon)
            return recent >= self.burst_limit * 0.9

    def _wait_for_slot(self) -> float:
        self.waiting += 1
        try:
            return self._wait_loop()
        finally:
            self.waiting -= 1

    def _wait_loop(self) -> float:
        span = self.plan.window_s + self.plan.safety_s
        waited = 0.0
        while True:
            now = self._clock()
            expired = bisect.bisect_right(self._sends, now - span)
            del self._sends[:expired]
            if now < self._paused_until:
                delay = self._paused_until - now
            elif self._probing():
                delay = 0.05  # the first response tells the plan's limit: one request until it is back
            elif len(self._sends) >= self.burst_limit:
                delay = self._sends[len(self._sends) - self.burst_limit] + span - now
            elif (spaced := self._spacing_delay(now)) > 0:
                delay = spaced
            else:
                self._credit = (self._credit or 0.0) - 1
                return waited
            delay = max(delay, 0.001)
            self._cond.wait(delay)
            waited += delay

    def _spacing_delay(self, now: float) -> float:
        """How long the next send must wait to keep sends evenly spaced (0: it may go now).

        The window alone lets a run send its whole burst at once, and those slots then free up together
        one window later, every window: each time, requests must be ready at that very moment or the slots
        go unused (at 20 per 2 s a run kept only 80% of the plan that way). So after the first window's
        burst, sends are spaced by a window's share, `(window + safety) / limit` (the rate the window
        allows), with `tolerance_s` of credit to catch up after a late request."""
        interval = (self.plan.window_s + self.plan.safety_s) / self.burst_limit
        most = max(1.0, self.plan.tolerance_s / interval)
        if self._credit is None:  # the first window: the whole burst may go at once
            self._credit, self._credited_at = float(self.burst_limit), now
        elif self._credit < most:
            self._credit = min(most, self._credit + (now - self._credited_at) / interval)
        self._credited_at = now
        return 0.0 if self._credit >= 1 else (1 - self._credit) * interval

    def _restamp(self, sent_at: float, arrived: float) -> None:
        """The request sent at `sent_at` arrived (by the estimate) at `arrived`: its slot counts from then."""
        index = bisect.bisect_left(self._sends, sent_at)
        if index < len(self._sends) and self._sends[index] == sent_at:
            del self._sends[index]
        bisect.insort(self._sends, arrived)

    def _slot_start(self, written: float, answered: float) -> float:
        """Where the slot of a request written and answered then starts, for a window (plus `safety_s`).

        Pipedrive counted it no later than the answer less its way back, and counts the request that
        takes the slot next no sooner than that one's send plus its way there: a way back and a way there
        take at least the quickest round trip seen (less the little time Pipedrive spent on that one,
        which `safety_s` covers). A queue before counting only lengthens the way there. Until a run has
        seen answers for two windows, its quickest may itself have waited in such a queue, and the slot
        starts at the answer."""
        self._quickest = min(self._quickest, answered - written)
        if self._answers_since is None:
            self._answers_since = answered
        if answered - self._answers_since < 2 * self.plan.window_s:
            return answered
        return answered - self._quickest

    def _probing(self) -> bool:
        return self.plan.burst_limit is None and self._header_limit is None and bool(self._sends)

    def _learn_burst(self, headers: Mapping[str, str], written: float, answered: float, status: int) -> None:
        limit = _int(headers.get("x-ratelimit-limit"))
        remaining = _int(headers.get("x-ratelimit-remaining"))
        if limit is None or limit < 1:
            return
        if limit != self._header_limit:
            if self._header_limit is None and self.plan.burst_limit is None:
                self._credit = None  # the first window's burst is the limit's, not the probe's assumed one
            self._header_limit = limit
            self.stats.limits_seen["burst"] = limit
        if remaining is None or status == 429:
            return
        # The server counted `limit - remaining` requests in the window ending at this one's arrival; ours
        # among them are those `_own_in_window` finds, the rest are other clients'. Counted by send time and
        # forgotten a window after the response, ours missed a round trip of them: every answer then seemed
        # to show 2-20 other requests at 120 per window, and the most of those, left free, was 10% of the
        # plan. Counted by the middle of their round trips, they moved with the time Pipedrive took to answer
        # each (a page of 500 records): as many as 9 too few in a burst.
        own = self._own_in_window(written, answered)
        foreign = (limit - remaining) - own
        if foreign > 1:  # one is arrival jitter; more are another client on the same token
            self._foreign.note(self._clock(), foreign)
            self.stats.foreign_seen = max(self.stats.foreign_seen, foreign)

    def _own_in_window(self, written: float, answered: float) -> int:
        """How many of our requests Pipedrive may have counted in the window ending at the arrival of the one
        written and answered then.

        Arrivals are known only within a round trip: a request arrives no sooner than half the quickest
        round trip after its write, and no later than that before its answer. Ours in the window are those
        written in the window before this one's write, plus those whose arrival may fall on the other side
        of either edge: written after it but before its latest arrival (its own way there was slow), or
        written before the window but answered late enough to have arrived inside it (theirs was slow: the
        first window's burst waits in Pipedrive's queue, and a slot opened by it is taken the moment it
        frees). Counted by write time alone, with `REORDER_S` as the only slack, those showed as another
        client's requests (spikes of 3-5 at 200 ms round trips, one window's slots left unused)."""
        quickest = min(self._quickest, answered - written)
        writes, edge = self._writes, written - self.plan.window_s
        inside = bisect.bisect_right(writes, edge)
        own = bisect.bisect_right(writes, answered - quickest + REORDER_S) - inside
        late = edge + quickest - REORDER_S  # an earlier request answered after this may have arrived inside
        oldest = edge - (self._slowest - quickest) - REORDER_S
        for index in range(inside - 1, -1, -1):
            if writes[index] <= oldest:
                break
            if self._answered.get(writes[index], math.inf) > late:
                own += 1
        return own

    def _forget_writes(self, horizon: float) -> None:
        gone = bisect.bisect_right(self._writes, horizon)
        for stamp in self._writes[:gone]:
            self._answered.pop(stamp, None)
        del self._writes[:gone]

    def _foreign_share(self) -> int:
        """Slots left to other clients on the token: the most they held in one window lately, plus one.

        A figure is what they held in the window ending at one of our arrivals; by our next arrival they may
        have sent again (a steady client sending 5 per window holds 4 or 5 at any moment). The last figure
        alone went stale that way and got this run a 429 in about 1 test run of 3."""
        most = self._foreign.since(self._clock() - self.plan.window_s, inclusive=False)
        return most + 1 if most is not None else 0

    def _on_429(self, headers: Mapping[str, str], cost: int) -> None:
        if classify_429(headers, b"", cost) == DAILY:
            self.stats.daily_429s += 1
            return
        self.stats.burst_429s += 1
        reset = _float(headers.get("x-ratelimit-reset")) or _float(headers.get("retry-after")) or 1.0
        self._paused_until = max(self._paused_until, self._clock() + min(reset, self.plan.window_s))
        self._penalty = min(self._current_penalty() + 1, max(0, self.burst_limit - 1))
        self._penalized_at = self._clock()

    def _current_penalty(self) -> int:
        """The limit is lowered by one per burst 429 and raised again by one per `PENALTY_DECAY_S` without
        one: a 429 caused by a moment's queue at Pipedrive then costs a minute, not the rest of the run
        (at 20 per window, one less is 5% of the plan)."""
        if not self._penalty:
            return 0
        return max(0, self._penalty - int((self._clock() - self._penalized_at) / PENALTY_DECAY_S))

    # ---- daily budget ---------------------------------------------------------------------------------
    @property
    def daily_limit(self) -> int | None:
        return self._daily_limit or self.plan.daily_token_budget

    @property
    def run_cap(self) -> int | None:
        """Tokens this run may spend at most (`max_budget_share` of the daily budget), if known."""
        limit = self.daily_limit
        if limit is None or self.plan.max_budget_share >= 1:
            return None
        return int(limit * self.plan.max_budget_share)

    def available(self) -> int | None:
        """Daily tokens left for new requests: the last reported figure minus what was sent after it."""
        return self._daily_left

    def _check_budget(self, cost: int) -> None:
        cap = self.run_cap
        if cap is not None and self.stats.spent + cost > cap:
            raise BudgetExhausted(
                f"This run reached its share of Pipedrive's daily API token budget (max_budget_share="
                f"{self.plan.max_budget_share:g}: {cap:,} of {self.daily_limit:,} tokens). Loaded data is "
                "kept; run the sync again to continue where it stopped (or raise max_budget_share).",
                reason="share",
                resets_at=None,
            )
        available = self.available()
        if available is not None and available < cost:
            raise self.exhausted(None)

    def exhausted(self, retry_after_s: float | None) -> BudgetExhausted:
        """The error for a used-up daily budget, saying when it resets."""
        resets_at = self._reset_time(retry_after_s)
        wait = max(0.0, (resets_at - self._now_utc()).total_seconds())
        return BudgetExhausted(
            f"Pipedrive's daily API token budget is used up; it resets in about {_duration(wait)} (around "
            f"{resets_at:%Y-%m-%d %H:%M} UTC). Loaded data is kept; run the sync again after that and it "
            "continues where it stopped.",
            reason=DAILY,
            resets_at=resets_at,
        )

    def _reset_time(self, retry_after_s: float | None) -> datetime:
        now = self._now_utc()
        if retry_after_s is not None:
            return now + timedelta(seconds=retry_after_s)
        server_now = now + (self._server_offset or timedelta())
        midnight = datetime.combine(server_now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return now + (midnight - server_now)  # the budget resets when the server's (UTC) day changes

    def _learn_daily(self, headers: Mapping[str, str], sent_at: float) -> None:
        limit = _int(headers.get("x-daily-ratelimit-token-limit"))
        if limit:
            self._daily_limit = limit
            self.stats.limits_seen["daily"] = limit
        remaining = _int(headers.get("x-daily-ratelimit-token-remaining"))
        if remaining is None:
            return
        # Pipedrive charges requests in arrival order, not send order, so a figure counts an unknown part of
        # what is in flight: all of it counts as still to come, and the estimate errs low by at most that.
        # Among answered requests, a lower figure means a later charge. Every request charged after the
        # newest-sent answered one (N) was in flight when N was sent, or sent later: it is answered after N
        # was sent, or still in flight. So the lowest figure answered since N was sent counts every charge
        # but those in flight now. (N's own figure alone missed a request sent before N, charged after it
        # and answered first: the run then overdrew the budget by one request now and then.)
        if sent_at >= self._daily_seen_at:
            self._daily_seen_at = sent_at
        self._daily_figures.note(self._clock(), remaining)
        lowest = self._daily_figures.since(self._daily_seen_at, inclusive=True)
        assert lowest is not None  # just noted, at or after any send time
        self._daily_left = lowest - sum(cost for _, cost in self._inflight.values())

    def _learn_date(self, headers: Mapping[str, str]) -> None:
        if self._server_offset is not None or not (date := headers.get("date")):
            return
        if (server_now := http_date(date)) is not None:
            self._server_offset = server_now - self._now_utc()


class _RecentExtreme:
    """The largest (or smallest) value noted since a horizon that only moves forward.

    Asked before every send (`burst_limit`) and after every answer: a value that is outdone by a later one
    can never be the answer again, so it is dropped when noted and the answer is always the first kept."""

    def __init__(self, largest: bool) -> None:
        self._sign = 1 if largest else -1
        self._kept: deque[tuple[float, int]] = deque()  # (noted at, value), values strictly worse to the back

    def note(self, at: float, value: int) -> None:
        while self._kept and self._kept[-1][1] * self._sign <= value * self._sign:
            self._kept.pop()
        self._kept.append((at, value))

    def since(self, horizon: float, inclusive: bool) -> int | None:
        """The extreme of the values noted after `horizon` (or at it, if `inclusive`); None if none."""
        kept = self._kept
        while kept and (kept[0][0] < horizon or (not inclusive and kept[0][0] == horizon)):
            kept.popleft()
        return kept[0][1] if kept else None


def classify_429(headers: Mapping[str, str], body: bytes, cost: int) -> str:
    """DAILY when the company's token budget refused the request, else BURST (see the module docstring)."""
    remaining = _int(headers.get("x-daily-ratelimit-token-remaining"))
    if remaining is not None and remaining < max(1, cost):
        return DAILY
    if b"daily" in body.lower() or b"token budget" in body.lower():
        return DAILY
    retry_after = _float(headers.get("retry-after"))
    if retry_after is not None and retry_after > 10 * WINDOW_S:
        return DAILY
    return BURST


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None


def _float(value: str | None) -> float | None:
    try:
        result = float(value) if value is not None else None
    except ValueError:
        return None
    return result if result is not None and math.isfinite(result) and result >= 0 else None


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes >= 120:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min" if minutes else f"{int(seconds)} s"
