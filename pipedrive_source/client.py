"""The one HTTP client every resource shares: auth headers, timeouts, bounded retries, 429 waits, accounting.

Transient failures (5xx, dropped connections, incomplete reads, malformed JSON bodies) are retried with
exponential backoff and full jitter, a bounded number of times; a body that is JSON but for what the fast
decoder refuses (a leading byte order mark, a lone surrogate escape, bytes that are not UTF-8, a number no
double holds or a `NaN` token) is decoded leniently instead (`json_body.loads`). Every attempt passes the
shared rate limiter (`limiter.py`): `acquire` before sending, `observe` after (status 0 when no response
came). A 429 is told apart by `limiter.classify_429`: a burst 429 waits for `x-ratelimit-reset` (or
`retry-after`) and retries; a daily-budget 429 (or one asking for longer than `max_rate_limit_wait_s`) ends
the run with a message saying when the budget resets. Every message is built from the path and status only,
never from headers or URLs that could hold a secret.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from . import json_body
from .errors import (
    AccessDenied,
    ApiError,
    AuthError,
    Interrupted,
    PipedriveError,
    env_setting,
    install_log_redaction,
    redact,
)
from .limiter import DAILY, BudgetExhausted, NoLimiter, PlanLimiter, RateLimiter, classify_429
from .oauth import Auth
from .settings import HttpSettings
from .timefmt import http_date

logger = logging.getLogger("pipedrive_source.client")

USER_AGENT = "pipedrive-source-dlt/0.1"
_READ = httpx.ByteStream(b"")  # stands in for the stream of a response read in full
# a NUL character (JSON `\u0000`, not preceded by an escaped backslash): Postgres stores it in neither text
# (dlt drops it there) nor JSON (jsonb refuses the whole load), so it is dropped from every value
_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


class _Transient(Exception):
    """A failure worth retrying; carries a short, secret-free description."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass
class EndpointStats:
    requests: int = 0
    tokens: int = 0


@dataclass
class ClientStats:
    """What the run cost: requests (every attempt), tokens (spec cost of admitted calls), retries, waits."""

    requests: int = 0
    tokens: int = 0
    retries: int = 0
    rate_limit_waits: int = 0  # burst 429s waited out
    daily_429s: int = 0  # daily-budget 429s (each ends the run)
    by_label: dict[str, EndpointStats] = field(default_factory=dict)
    daily_remaining: int | None = None  # last `x-daily-ratelimit-token-remaining` seen

    def add(self, label: str, tokens: int) -> None:
        self.requests += 1
        self.tokens += tokens
        entry = self.by_label.setdefault(label, EndpointStats())
        entry.requests += 1
        entry.tokens += tokens


_LIVE_CLIENTS: weakref.WeakSet[PipedriveClient] = weakref.WeakSet()


def abort_requests() -> None:
    """End the requests still retrying in every client of this process (the run was interrupted or failed
    in the thread that reads): a fetch thread went on retrying, logging, and holding the process's exit
    for its last attempts (12 s against a demo emulator already stopped)."""
    for client in list(_LIVE_CLIENTS):
        client.abort(Interrupted("The run was interrupted."))


class PipedriveClient:
    """Thread-safe GET client for Pipedrive's v1 and v2 APIs (and the OAuth token endpoint through `auth`)."""

    def __init__(
        self,
        base_url: str,
        auth: Auth,
        settings: HttpSettings | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], Any] | None = None,
        section: str | None = None,
    ) -> None:
        """`section`: the named company whose own settings the run reads first (`errors.env_setting`), so
        that a message names the setting to fix; None for the single company's."""
        install_log_redaction()
        self._abort_event = threading.Event()  # set by `abort`: a retry's or a rate limit's wait ends at once
        self.settings = settings or HttpSettings()
        self.auth = auth
        self.limiter = limiter or NoLimiter()
        self.stats = ClientStats()
        self._base_url = base_url.rstrip("/")
        self._section = section
        self._sleep = sleep or self._abort_event.wait
        self._lock = threading.Lock()
        self._prepared = False
        self._gate = threading.Lock()  # one request at a time until the first got through
        self._open = False
        self._fatal: PipedriveError | None = None
        self._aborted: PipedriveError | None = None
        _LIVE_CLIENTS.add(self)
        self._server_now: datetime | None = None
        self._reading = threading.local()  # `before_read` of the request this thread is making
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.settings.read_timeout_s, connect=self.settings.connect_timeout_s),
            headers={"accept": "application/json", "user-agent": USER_AGENT},
            follow_redirects=False,  # a redirect could carry our auth header to another host
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def server_now(self) -> datetime | None:
        """The server's clock (`Date` header) at the first response of this client, UTC."""
        return self._server_now

    def close(self) -> None:
        self._http.close()

    def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        cost: int,
        label: str,
        missing_ok: bool = False,
        accept: Callable[[dict], str | None] | None = None,
    ) -> dict:
        """GET a JSON object from `path` (e.g. `/api/v2/deals`); retries transient failures.

        Raises PipedriveError subclasses; with `missing_ok` a 404 returns `{}` instead. `accept` judges a
        2xx body: what is wrong with it (None: nothing) makes it a failure retried as a 5xx is (a field
        list without a field). Until a first request got through, requests go one at a time: if Pipedrive
        is unreachable or refuses the credentials, the run ends after one request's retries instead of
        every worker's.
        """
        if not self._open:
            with self._gate:
                if self._fatal is not None:
                    raise type(self._fatal)(self._fatal.message)
                if not self._open:
                    try:
                        body = self._get(path, params, cost, label, missing_ok, accept)
                    except (AuthError, _Unavailable) as exc:
                        self._fatal = exc
                        raise
                    except PipedriveError:
                        self._open = True  # the server answered: later requests may run concurrently
                        raise
                    self._open = True
                    return body
        return self._get(path, params, cost, label, missing_ok, accept)

    @contextlib.contextmanager
    def before_read(self, hook: Callable[[], None]) -> Iterator[None]:
        """Requests this thread makes meanwhile call `hook` once their response headers are in, before
        the body is read: it may block (the body waits in the socket, not in memory), which is how the
        fetch pool bounds the pages decoded at once."""
        self._reading.hook = hook
        try:
            yield
        finally:
            self._reading.hook = None

    def abort(self, error: PipedriveError) -> None:
        """End every request still retrying with `error` (the run failed elsewhere)."""
        if self._aborted is None:
            self._aborted = error
        self._abort_event.set()

    def _get(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        cost: int,
        label: str,
        missing_ok: bool,
        accept: Callable[[dict], str | None] | None = None,
    ) -> dict:
        self._prepare()
        query = {k: v for k, v in (params or {}).items() if v is not None}
        failures = waits = renewals = 0
        unreachable = False  # every failure so far was a refused/failed connection
        while True:
            if self._aborted is not None:
                raise type(self._aborted)(self._aborted.message)
            try:
                return self._attempt(path, query, cost, label, missing_ok, accept)
            except _Unauthorized as exc:
                renewals += 1
                if renewals > 1:  # a fresh token refused again: renewing once more will not help
                    raise self.auth.rejected() from None
                self._switch_base_url(self.auth.recover(self._post_token, exc.sent_headers))
            except _Transient as exc:
                failures += 1
                unreachable = exc.unreachable and (failures == 1 or unreachable)
                self._pause_to_retry(path, exc, failures, self._gave_up(path, failures, exc, unreachable))
                with self._lock:
                    self.stats.retries += 1
            except _RateLimited as exc:
                waits += 1
                self._wait_for_rate_limit(path, exc, waits)

    def _pause_to_retry(self, what: str, exc: _Transient, failures: int, give_up: ApiError) -> None:
        """After a failed attempt: end the retries when the run is aborted or `max_attempts` are spent (with
        `give_up`), else wait the backoff (an abort ends the wait)."""
        if self._aborted is not None:  # the server went with the run (a demo): no retry, no warning
            raise type(self._aborted)(self._aborted.message) from None
        if failures >= self.settings.max_attempts:
            raise give_up from None
        delay = self._backoff(failures)
        logger.warning("retrying %s in %.1fs after %s (attempt %d)", what, delay, exc, failures)
        self._sleep(delay)

    def _gave_up(self, path: str, failures: int, exc: _Transient, unreachable: bool) -> ApiError:
        if unreachable:
            settings = ", ".join(env_setting(key, self._section) for key in ("base_url", "company_domain"))
            return _Unavailable(
                f"Could not connect to {self._base_url} ({exc}, {failures} attempts). Check base_url / "
                f"company_domain ({settings}) and the network."
            )
        return _Unavailable(
            f"Pipedrive kept failing on {path} after {failures} attempts (last: {exc}). "
            "Nothing from this run was committed; run the sync again later."
        )

    def _prepare(self) -> None:
        if self._prepared:
            return
        with self._lock:
            if not self._prepared:
                self._switch_base_url(self.auth.prepare(self._post_token))
                self._prepared = True

    def _post_token(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST to the OAuth token endpoint (for `auth`); a 5xx or a failed connection is retried like a GET.
        Not retried, a moment's outage there ended the run (mid-run too, when the access token expired) with
        exit 2 and a line blaming the refresh token."""
        failures = 0
        while True:
            if self._aborted is not None:
                raise type(self._aborted)(self._aborted.message)
            try:
                response = self._http.post(url, **kwargs)
            except httpx.TransportError as exc:
                failure = _Transient(f"connection problem ({type(exc).__name__})", unreachable=True)
            else:
                if response.status_code < 500:
                    return response
                failure = _Transient(f"HTTP {response.status_code}")
            failures += 1
            # not in stats.retries: `_prepare` may hold the lock for them
            self._pause_to_retry(
                "the OAuth token endpoint", failure, failures, _token_gave_up(failure, failures)
            )

    def _attempt(
        self,
        path: str,
        query: dict[str, Any],
        cost: int,
        label: str,
        missing_ok: bool,
        accept: Callable[[dict], str | None] | None,
    ) -> dict:
        self.limiter.acquire(cost)
        headers = self.auth.headers()
        request = self._http.build_request(
            "GET", self._base_url + path, params=query, headers=headers, extensions={"trace": self._trace}
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            self.limiter.observe(0, {})
            raise self._transport_failure(exc, label, cost) from None
        # as soon as the headers are in (the request arrived before them), not after the body: the limiter
        # counts the request's burst slot from this moment
        self.limiter.observe(response.status_code, response.headers)
        hook = getattr(self._reading, "hook", None)
        try:
            if hook is not None:
                hook()
            response.read()
        except httpx.TransportError as exc:
            raise self._transport_failure(exc, label, cost) from None
        finally:
            response.close()
            # httpx's stream holds its response: a cycle, freed only by a full garbage collection, which
            # a sync of a million records runs seldom. Every body read stayed in memory until then
            # (40-50 MB at a time in a large sync); without the stream the body goes with the response.
            response.stream = _READ
        self._note_headers(response.headers)
        if response.status_code == 404 and missing_ok:
            self._count(label, 0)
            return {}
        body = self._interpret(response, path, headers, cost, label)
        wrong = accept(body) if accept is not None else None
        if wrong:
            raise _Transient(wrong)
        return body

    def _trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's progress events: the moment the request is on the wire is when its burst slot starts
        (the thread may have waited for the GIL since `acquire`)."""
        if event.endswith("send_request_body.complete"):
            written = getattr(self.limiter, "written", None)
            if written is not None:
                written()

    def _transport_failure(self, exc: httpx.TransportError, label: str, cost: int) -> _Transient:
        if isinstance(exc, httpx.ConnectError):
            self._count(label, 0)  # never reached the server: nothing spent
            return _Transient(f"connection failed: {type(exc).__name__}", unreachable=True)
        self._count(label, cost)
        if isinstance(exc, httpx.TimeoutException):
            return _Transient(f"timeout ({type(exc).__name__})")
        return _Transient(f"connection problem ({type(exc).__name__})")

    def _interpret(
        self, response: httpx.Response, path: str, sent: dict[str, str], cost: int, label: str
    ) -> dict:
        status = response.status_code
        if status == 429:
            self._count(label, 0)
            raise _RateLimited(response.headers, response.content, cost)
        if status == 401:
            self._count(label, 0)
            raise _Unauthorized(sent)
        self._count(label, cost)
        if status >= 500:
            raise _Transient(f"HTTP {status}")
        if status in _REFUSALS:
            detail = _error_text(response)
            raise AccessDenied(f"{path}: {_REFUSALS[status].format(detail=detail)}", status, detail)
        if status >= 400:
            raise ApiError(f"Pipedrive rejected GET {path} with HTTP {status}: {_error_text(response)}")
        # A page decodes into thousands of containers that all stay alive until the page is shaped: the
        # cyclic collections its allocations trigger (one per 700) free nothing and promote the page to
        # older generations, whose full collections walk every live object again. Pausing the collector
        # while a body is decoded cut the time spent collecting from ~12 s to ~7 s of CPU (all of it
        # holding the GIL) in a sync of a million records.
        content = response.content
        if b"\\u0000" in content:  # rare: a scan of the bytes, no work per record
            content = _NUL.sub(rb"\1", content)
        collecting = gc.isenabled()
        gc.disable()
        try:
            body = json_body.loads(content)
        except json_body.NotJson:
            raise _Transient(_not_json(response, content)) from None
        finally:
            if collecting:
                gc.enable()
        if not isinstance(body, dict):
            raise _Transient("unexpected JSON body")
        return body

    def _count(self, label: str, cost: int) -> None:
        with self._lock:
            self.stats.add(label, cost)

    def _note_headers(self, headers: httpx.Headers) -> None:
        if self._server_now is None and (date := headers.get("date")):
            self._server_now = http_date(date)  # an unreadable Date: the next response's
        remaining = headers.get("x-daily-ratelimit-token-remaining")
        if remaining and remaining.isdigit():
            self.stats.daily_remaining = int(remaining)

    def _switch_base_url(self, base_url: str | None) -> None:
        if base_url:
            self._base_url = base_url.rstrip("/")

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # jitter keeps parallel workers from retrying in lockstep

    def _wait_for_rate_limit(self, path: str, exc: _RateLimited, waits: int) -> None:
        wait = exc.wait_s()
        if exc.kind == DAILY or wait > self.settings.max_rate_limit_wait_s:
            with self._lock:
                self.stats.daily_429s += 1
            raise self._budget_gone(path, exc) from None
        if waits > self.settings.max_rate_limit_attempts:
            raise ApiError(f"Pipedrive kept answering 429 on {path}; giving up after {waits} waits.")
        with self._lock:
            self.stats.rate_limit_waits += 1
        logger.info("rate limited (burst) on %s; waiting %.1fs", path, wait)
        self._sleep(wait)

    def _budget_gone(self, path: str, exc: _RateLimited) -> BudgetExhausted:
        retry_after = exc.retry_after_s()
        if isinstance(self.limiter, PlanLimiter):
            return self.limiter.exhausted(retry_after)
        wait = retry_after if retry_after is not None else exc.wait_s()
        resets_at = datetime.now(UTC) + timedelta(seconds=wait)
        return BudgetExhausted(
            f"Pipedrive's daily API token budget is used up (HTTP 429 on {path}); it resets in about "
            f"{_duration(wait)} (around {resets_at:%Y-%m-%d %H:%M} UTC). Loaded data is kept; run the "
            "sync again after that and it continues where it stopped.",
            reason=DAILY,
            resets_at=resets_at,
        )


class _Unavailable(ApiError):
    """Retries did not help: Pipedrive is unreachable or keeps failing."""


def _token_gave_up(last: _Transient, failures: int) -> _Unavailable:
    hint = " Check the network and the OAuth token_url." if last.unreachable else ""
    return _Unavailable(
        f"The OAuth token endpoint kept failing after {failures} attempts (last: {last}). "
        f"Nothing from this run was committed; run the sync again later.{hint}"
    )


class _Unauthorized(Exception):
    def __init__(self, sent_headers: dict[str, str]) -> None:
        super().__init__("HTTP 401")
        self.sent_headers = sent_headers


class _RateLimited(Exception):
    def __init__(self, headers: httpx.Headers, content: bytes, cost: int) -> None:
        super().__init__("HTTP 429")
        self.headers = headers
        self.kind = classify_429(headers, content, cost)

    def wait_s(self) -> float:
        """Seconds until the burst window frees a slot."""
        for name in ("x-ratelimit-reset", "retry-after"):
            value = self.headers.get(name, "")
            try:
                return max(0.05, float(value))
            except ValueError:
                continue
        return 2.0  # Pipedrive's burst window is 2 seconds

    def retry_after_s(self) -> float | None:
        try:
            return max(0.0, float(self.headers.get("retry-after", "")))
        except ValueError:
            return None


# why Pipedrive refuses a list (the credentials are fine) and what the user can do about it
_REFUSALS = {
    402: "not in the Pipedrive company's plan, or its subscription has lapsed (HTTP 402: {detail}). Upgrade "
    "the plan, or leave this table out of `entities`.",
    403: "the user of these credentials lacks the permission (HTTP 403: {detail}). Use the API token of a "
    "user who has it (a global admin), or leave this table out of `entities`.",
}


def _not_json(response: httpx.Response, content: bytes) -> str:
    """What a 2xx body that is not JSON was, for the retry line and the give-up message: an HTML page is a
    proxy, a captive portal or a maintenance page in the way, which the person running the sync can act on;
    "malformed JSON" sent them looking for a bug in Pipedrive's answers."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "text/html" or content.removeprefix(json_body.BOM).lstrip()[:1] == b"<":
        return f"an HTML page instead of JSON (HTTP {response.status_code}; a proxy or maintenance page?)"
    return "malformed JSON body"


def _error_text(response: httpx.Response) -> str:
    try:
        body = json_body.loads(response.content)
    except json_body.NotJson:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        text = body.get("error") or body.get("message") or ""
        info = body.get("error_info")
        if info and isinstance(info, str) and "developers.pipedrive.com" not in info:
            text = f"{text} ({info})"
        return redact(str(text)[:300]) or f"HTTP {response.status_code}"
    return f"HTTP {response.status_code}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes >= 120:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes} min" if minutes else f"{int(seconds)} s"
