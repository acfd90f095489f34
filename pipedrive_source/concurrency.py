"""Concurrent fetching: one thread pool per run, and feeds of pages that resource generators drain.

A sync is bound by Pipedrive's rate limit, and with network latency one request at a time reaches a fraction
of it. Every request of a run goes through one pool of `workers` threads (and the shared limiter). Each
resource drains its own `Feed`: pages fetched ahead, at most `capacity` buffered or in flight (memory stays
flat whatever the company's size), taken without blocking. `Feed.pages()` yields None while nothing is ready,
which a dlt resource passes on: dlt then serves other resources instead of waiting.

How a listing is split without losing or duplicating records:
- `TimeWindows`: v2 lists filtered by `updated_since` (inclusive) .. `updated_until` (exclusive), sorted by
  `update_time` ascending, cursor paging. The range starts as one window; while the pool has idle workers
  and nobody waits for the rate limiter, the window with the most records left (its last page's density
  times its remaining time) is split at its time midpoint: it keeps the records before the midpoint (and
  drops later ones from the page that reaches it), a new window pages [midpoint, end). Midpoints are whole
  seconds, so windows partition the range. A record updated while we page moves past `updated_until` and
  waits for the next run.
- `OffsetPages`: v1 `start`/`limit` lists read in full: the first page, then (if it was full) `ahead` pages
  at known offsets at once (each re-reading `overlap` records of the previous one, like
  `pagination.offset_pages`); the first short page ends the list, speculative pages after it are discarded.
- `Chain`: anything sequential (a cursor without a time filter, a sorted read that may stop early, a single
  response); independent requests (deal-id batches, one per parent) are simply several chains, started
  one at a time as their feed has room (`Feed.supply`): a chain waiting for its turn holds 0.8-2.5 KB, and
  a company's every product (or, opted in, every deal) is a chain.

A `BudgetExhausted` from the limiter stops the whole pool: nothing new is sent, what arrived is still drained,
and each job knows whether it completed (`TimeWindows.resume_from` says where an incomplete one continues).

Memory: decoded pages are Python objects several times the size of their JSON, so the run holds few of
them (`DEFAULT_DECODED`: a response is read only once its page has room, `PageRoom`), while more requests
may wait for the rate limiter or be on their way (`DEFAULT_BUFFERED`, `DEFAULT_CAPACITY`): those hold no
memory, and a run paced by the plan needs them. What a sync frees mostly stayed with the process, and
DuckDB then loaded on top of it: pages are decoded in the worker threads and freed in the extract thread,
and glibc gives every thread its own malloc arena (16 arenas each kept its freed chunks). So the pool caps
the malloc arenas at `MALLOC_ARENAS` (unless the environment sets `MALLOC_ARENA_MAX`): one arena, whose
free chunks every thread reuses (with 2, half the workers shared the extract thread's arena and the other
half kept their own; a large sync's extraction peaked about 5 MB higher and its load about 8 MB, 6 runs
each; the GIL serializes the Python work anyway, so the lock costs no time), fixes glibc's mmap threshold at
`MMAP_THRESHOLD` (glibc raises it after every large free, and response bodies and Arrow buffers of a
megabyte then came from the heap, which fragmented: about 20 MB more at the peak of a large sync), and
`release_memory()` hands freed memory back to the OS: from the extract thread as it goes (also Arrow's
pool, whose cache only the thread that freed can release), and from a short-lived thread every second
until `RELEASE_AFTER_S` after the last page (dlt frees its buffers after the last page, while it writes its
files).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from .client import PipedriveClient
from .errors import AccessDenied, PipedriveError
from .limiter import BudgetExhausted
from .pagination import LoopGuard, looping, page_mark
from .pagination import _items as page_items
from .settings import RUN_BUFFERED_PAGES

Row = dict[str, Any]
DEFAULT_WORKERS = 16
# Requests waiting for the rate limiter count here too (they hold no memory): at 120 requests per 2 s and a
# round trip of ~150 ms about 10 are in flight, and the limiter needs a few more waiting to use every slot;
# 12 (6 per feed) kept a run at 80-90% of that plan, and one entity left alone at 50 requests per second.
# What holds memory is a page from the moment its body is read until the extract thread took it: capped
# apart (`max_decoded`), so that a run bound by its own processing (no rate limit, every answer at once)
# holds a few pages, not 20: a response whose page has no room yet waits unread, in the socket.
DEFAULT_CAPACITY = 12  # pages per feed buffered, in flight or waiting for the rate limiter
DEFAULT_BUFFERED = RUN_BUFFERED_PAGES  # pages of the whole run buffered, in flight or waiting
DEFAULT_DECODED = 4  # pages of the whole run read or decoded and not taken yet
MALLOC_ARENAS = 1  # glibc malloc arenas of the process (see the module docstring)
RELEASE_AFTER_S = 30.0  # memory is released every second until this long after the last page was taken
SPLIT_MIN_PAGES = 8  # split a window only when it seems to hold this many pages more (a split wastes ~1/2)
# a listing read as one window gets a page per round trip while lists of independent requests (one per
# product, per 100 deals) fill the limiter's queue: split into this many even when the plan is the limit,
# or the largest lists were left for the end of a run, read at the pace of the extract thread alone
MIN_WINDOWS = 4


@dataclass
class Batch:
    """One response's records, with the job and listing tag it belongs to."""

    items: list[Row]
    tag: Any
    room: PageRoom | None = None  # its place among the run's decoded pages, given back when taken


class PageRoom:
    """A step's place among the pages a run holds decoded (`FetchPool.max_decoded`): taken when its first
    response is about to be read (the client's `before_read` hook; a retry keeps it), given back once the
    page was taken or the step ended without one."""

    def __init__(self, slots: threading.Semaphore) -> None:
        self._slots = slots
        self._taken = False

    def __call__(self) -> None:
        if not self._taken:
            self._slots.acquire()
            self._taken = True

    def give_back(self) -> None:
        if self._taken:
            self._taken = False
            self._slots.release()


def _libc() -> Any:
    """glibc, or None (another C library or platform: nothing to tune)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _libc()
_M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
_M_ARENA_MAX = -8
_MADV_DONTNEED = 4  # madvise advice: drop these pages (a file's are mapped again from it when used)
MMAP_THRESHOLD = 256 * 1024  # allocations from this size get their own mapping, unmapped when freed
_released_at = 0.0
_last_page_at = 0.0
_releaser: threading.Thread | None = None
_releaser_lock = threading.Lock()
_exiting = threading.Event()


def bound_malloc() -> None:
    """Cap glibc's malloc arenas and fix its mmap threshold (see the module docstring), unless the
    environment sets them. Before the threads that allocate start: the fetch pool's, and a load's jobs (a
    package can load in a process that extracted nothing, say the next run's after a crash)."""
    if _LIBC is not None and "MALLOC_ARENA_MAX" not in os.environ:
        _LIBC.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    if _LIBC is not None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def bound_process_memory() -> None:
    """`bound_malloc()` and keep releasing freed memory until a while after the last page. Before the
    worker threads start."""
    global _releaser
    bound_malloc()
    _note_page()
    with _releaser_lock:
        if _releaser is None or not _releaser.is_alive():
            _releaser = threading.Thread(target=_keep_releasing, name="pipedrive-release", daemon=True)
            _releaser.start()


def drop_duckdb_code() -> None:
    """Drop the pages of DuckDB's library that ran before the extraction from this process's memory:
    `pipeline.run` first reads the destination's state, which brings about 26 MB of DuckDB's code in, and an
    extraction runs none of it (a large sync's extraction peaked at 259 MB with those pages, 231 MB without).
    Only mappings that hold the file's own contents (not writable, no page of them a private copy): the load
    maps again, from the file, what it runs. Another process's use of the library is not touched."""
    library = _duckdb_library()
    if library is None:
        return
    try:
        spans = list(_unwritten_mappings(os.path.realpath(library)))
    except OSError:
        return
    for start, end in spans:
        _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


def _unwritten_mappings(path: str) -> Iterator[tuple[int, int]]:
    """This process's mappings of `path` that are not writable and hold no private copy of a page."""
    span = None
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
        for line in smaps:
            if line[:1] in "0123456789abcdef":  # a mapping's first line; its fields' lines start with a name
                fields = line.split(maxsplit=5)
                span = fields[0] if line.rstrip("\n").endswith(path) and "w" not in fields[1] else None
            elif span is not None and line.startswith("Anonymous:"):
                if int(line.split()[1]) == 0:
                    start, end = span.split("-")
                    yield int(start, 16), int(end, 16)
                span = None


_DECAYS = ("dirty", "muzzy")  # jemalloc's two delays before freed pages go back (lazily, then for good)


def purge_duckdb_at_once() -> Callable[[], None]:
    """Make DuckDB's allocator give the pages it frees back to the OS at once, not a second later; returns
    what restores the delays it had. DuckDB's library carries a jemalloc of its own, which keeps freed pages
    (dirty, then muzzy) for its decay time, 1 s each by default: through a load, whose jobs free their
    chunks and buffers one after another, up to 24 MB of freed pages stayed resident after a job (a tiny
    company's sync; none now). Every arena, and the arenas it creates later. Nothing to do where DuckDB's
    library exports no jemalloc (other platforms or builds), or where the environment configures it."""
    mallctl = None if "DUCKDB_JE_MALLOC_CONF" in os.environ else _duckdb_mallctl()
    if mallctl is None:
        return lambda: None
    before = {kind: _mallctl_read(mallctl, f"arenas.{kind}_decay_ms", ctypes.c_ssize_t) for kind in _DECAYS}
    if None in before.values():
        return lambda: None
    _set_decay(mallctl, dict.fromkeys(_DECAYS, 0))
    return lambda: _set_decay(mallctl, before)


def _duckdb_library() -> str | None:
    """The file of DuckDB's loaded library, where glibc is there to work on its memory (else None)."""
    library = getattr(sys.modules.get("_duckdb"), "__file__", None)
    return library if _LIBC is not None and library else None


def _duckdb_mallctl() -> Any:
    """The `mallctl` of the jemalloc in DuckDB's library (its Linux builds export it), or None."""
    library = _duckdb_library()
    if library is None:
        return None
    try:
        return ctypes.CDLL(library).duckdb_je_mallctl
    except (OSError, AttributeError):
        return None


def _mallctl_read(mallctl: Any, name: str, kind: Any) -> Any:
    value, size = kind(), ctypes.c_size_t(ctypes.sizeof(kind))
    failed = mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0))
    return None if failed else value.value


def _set_decay(mallctl: Any, decay: Mapping[str, Any]) -> None:
    arenas = _mallctl_read(mallctl, "arenas.narenas", ctypes.c_uint) or 0
    for kind, ms in decay.items():
        value = ctypes.c_ssize_t(ms)
        # the default of arenas made later, then each arena's own (one not made yet refuses: it gets the
        # default)
        for name in [f"arenas.{kind}_decay_ms", *(f"arena.{i}.{kind}_decay_ms" for i in range(arenas))]:
            mallctl(name.encode(), None, None, ctypes.byref(value), ctypes.c_size_t(ctypes.sizeof(value)))


def _note_page() -> None:
    global _last_page_at
    _last_page_at = time.monotonic()


def _keep_releasing() -> None:
    while not _exiting.wait(1.0) and time.monotonic() - _last_page_at < RELEASE_AFTER_S:
        release_memory(min_interval_s=0.5)


@atexit.register
def _stop_releasing() -> None:
    """A daemon thread still running when the interpreter finalizes keeps DuckDB's objects from being
    collected in order (DuckDB then prints a 'nanobind: leaked ...' list on exit)."""
    _exiting.set()
    if _releaser is not None:
        _releaser.join(timeout=5)


def release_memory(min_interval_s: float = 1.0) -> None:
    """Give memory freed since the last call back to the OS (glibc's free chunks, Arrow's pool cache).

    At most once per `min_interval_s` (a call takes milliseconds); 0 releases now."""
    global _released_at
    now = time.monotonic()
    if now - _released_at < min_interval_s:
        return
    _released_at = now
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    pa.default_memory_pool().release_unused()  # a no-op for malloc; mimalloc: this thread's cache


class FetchPool:
    """The run's worker threads. `stop` (on a used-up budget) makes every later request a no-op."""

    def __init__(
        self,
        client: PipedriveClient,
        workers: int = DEFAULT_WORKERS,
        max_buffered: int = DEFAULT_BUFFERED,
        max_decoded: int = DEFAULT_DECODED,
    ) -> None:
        bound_process_memory()
        self.client = client
        self.workers = max(1, workers)
        self.max_buffered = max(1, max_buffered)
        self._decoded = threading.BoundedSemaphore(max(1, max_decoded))
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="pipedrive-fetch")
        self._lock = threading.Lock()
        self._busy = 0
        self._held = 0  # pages buffered or in flight in all feeds
        self._feeds: list[Feed] = []  # feeds with parked requests, waiting for room
        self.stopped: BudgetExhausted | None = None
        self.failed: BaseException | None = None

    def spare(self) -> bool:
        """Whether more concurrency would help: idle workers and no request waiting for the rate limit."""
        saturated = getattr(self.client.limiter, "saturated", False)
        return self._busy < self.workers and not saturated and not self.halted

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            self._busy += 1
        self._executor.submit(self._run, task)

    def _run(self, task: Callable[[], None]) -> None:
        try:
            task()
        finally:
            with self._lock:
                self._busy -= 1

    def hold(self) -> bool:
        """Reserve room for one page in the run's buffer (False: full, try again when one is taken)."""
        with self._lock:
            if self._held >= self.max_buffered:
                return False
            self._held += 1
            return True

    def release(self) -> None:
        """A page left the buffer: feeds that waited for room get their turn."""
        with self._lock:
            self._held -= 1
        self._wake()

    def page_room(self) -> PageRoom:
        return PageRoom(self._decoded)

    def wait_for_room(self, feed: Feed) -> None:
        with self._lock:
            if feed not in self._feeds:
                self._feeds.append(feed)
            room = self._held < self.max_buffered
        if room:  # freed between the feed's try and now: no release would wake it
            self._wake()

    def _wake(self) -> None:
        with self._lock:
            feeds, self._feeds = self._feeds, []
        for feed in feeds:
            feed.dispatch()

    def stop(self, exc: BudgetExhausted) -> None:
        with self._lock:
            if self.stopped is None:
                self.stopped = exc

    def fail(self, exc: BaseException) -> None:
        """The run failed: no new request, and requests still retrying give up now."""
        with self._lock:
            if self.failed is None:
                self.failed = exc
        if isinstance(exc, PipedriveError):
            self.client.abort(exc)

    @property
    def halted(self) -> bool:
        return self.stopped is not None or self.failed is not None

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


Step = Callable[[], "Outcome"]


@dataclass
class Outcome:
    batch: Batch | None = None
    follow: list[Step] = field(default_factory=list)  # next requests of the same job


class Feed:
    """Pages for one consumer. Steps run in the pool; their batches queue here until `take`n."""

    def __init__(self, pool: FetchPool, capacity: int = DEFAULT_CAPACITY) -> None:
        self.pool = pool
        self.capacity = max(1, capacity)
        self._ready: deque[Batch] = deque()
        self._parked: deque[Step] = deque()
        self._inflight = 0
        self._error: BaseException | None = None
        self._closed = False
        self._more: Callable[[], bool] | None = None  # starts one more job (`supply`)
        self._supplying = False
        self._lock = threading.Lock()

    @property
    def stopped(self) -> BudgetExhausted | None:
        return self.pool.stopped

    def has_room(self) -> bool:
        with self._lock:
            return len(self._ready) + self._inflight < self.capacity

    def add(self, step: Step) -> None:
        """Schedule a request; it waits (parked) while the feed is full."""
        with self._lock:
            self._parked.append(step)
        self.dispatch()

    def supply(self, more: Callable[[], bool]) -> None:
        """Jobs started one at a time, when the feed has room and nothing parked: `more()` starts the next
        (adding its first step) and says whether there was one. Reads of thousands of parents started all
        their jobs at once, objects held until their turn came (memory that grew with the company)."""
        with self._lock:
            self._more = more
        self.dispatch()

    def take(self) -> Batch | None:
        """A ready batch, or None; raises a job's error. `finished` tells when None means the end."""
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            batch = self._ready.popleft() if self._ready else None
        if batch is not None:
            _note_page()
            if batch.room is not None:
                batch.room.give_back()
            self.pool.release()
            self.dispatch()
        return batch

    @property
    def finished(self) -> bool:
        with self._lock:
            idle = not self._ready and not self._inflight
            return idle and ((not self._parked and self._more is None) or self.pool.halted)

    def pages(self) -> Iterator[Batch | None]:
        """Every batch until all jobs are done; None whenever nothing is ready yet (do not block dlt)."""
        try:
            while True:
                batch = self.take()
                if batch is not None:
                    yield batch
                elif self.finished:
                    with self._lock:
                        if self._error is not None:
                            raise self._error
                    return
                else:
                    yield None
        finally:
            self.close()

    def close(self) -> None:
        """The consumer is gone (done, or stopped by an error): pages still buffered or arriving give their
        room back instead of holding it for good, and nothing new is sent for it."""
        with self._lock:
            self._closed = True
            dropped, self._ready = self._ready, deque()
            self._parked.clear()
            self._more = None
        for batch in dropped:
            if batch.room is not None:
                batch.room.give_back()
            self.pool.release()

    def dispatch(self) -> None:
        """Send parked requests while this feed and the run's buffer have room."""
        while True:
            with self._lock:
                if self.pool.halted or self._closed:
                    return
                if len(self._ready) + self._inflight >= self.capacity:
                    return
                if not self._parked:
                    if self._more is None or self._supplying:
                        return  # (a thread supplying dispatches the job it starts)
                    self._supplying = True
                    more = self._more
                else:
                    more = None
                    if not self.pool.hold():
                        break
                    step = self._parked.popleft()
                    self._inflight += 1
            if more is not None:
                self._supply_one(more)
                continue
            self.pool.submit(lambda step=step: self._execute(step))
        self.pool.wait_for_room(self)

    def _supply_one(self, more: Callable[[], bool]) -> None:
        started = False
        try:
            started = more()
        except BaseException as exc:  # from whichever thread dispatched: the consumer raises it
            with self._lock:
                self._error = self._error or exc
        finally:
            with self._lock:
                self._supplying = False
                if not started:
                    self._more = None

    def _execute(self, step: Step) -> None:
        outcome: Outcome | None = None
        room = self.pool.page_room()
        try:
            if not self.pool.halted:
                with self.pool.client.before_read(room):
                    outcome = step()
        except BudgetExhausted as exc:
            self.pool.stop(exc)
        except AccessDenied as exc:  # this entity only: the consumer skips it
            with self._lock:
                self._error = self._error or exc
        except BaseException as exc:  # the run fails: handed to the consumer, the others stop
            with self._lock:
                self._error = self._error or exc
            self.pool.fail(exc)
        with self._lock:
            self._inflight -= 1
            kept = outcome is not None and outcome.batch is not None and not self._closed
            if kept:
                outcome.batch.room = room
                self._ready.append(outcome.batch)
            if outcome is not None:
                # follow-ups go first: finishing a started job frees memory sooner than starting another
                self._parked.extendleft(reversed(outcome.follow))
        if not kept:
            room.give_back()
            self.pool.release()  # nothing to buffer: the room goes back now
        self.dispatch()


# ---- requests ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    path: str
    params: Mapping[str, Any]
    cost: int
    label: str
    missing_ok: bool = False

    def get(self, client: PipedriveClient, **extra: Any) -> dict:
        query = {**self.params, **extra}
        return client.get(self.path, query, cost=self.cost, label=self.label, missing_ok=self.missing_ok)


class Chain:
    """Sequential pages of one request: `cursor` (v2), `offset` (v1, early stop allowed) or `single`."""

    def __init__(
        self,
        feed: Feed,
        request: Request,
        paging: str,
        tag: Any,
        page_size: int | None = None,
        overlap: int = 0,
        keep_going: Callable[[list[Row]], bool] | None = None,
        time_field: str | None = None,
    ) -> None:
        self.feed, self.request, self.paging, self.tag = feed, request, paging, tag
        self.page_size, self.overlap = page_size, overlap
        self.keep_going = keep_going  # after each page: False ends the chain (sorted reads, early stop)
        self.time_field = time_field  # ascending reads: the newest time read so far is where to resume
        self.position: str | None = None
        self.complete = False
        self.guard = LoopGuard(request.path)

    def resume_from(self) -> str | None:
        return self.position

    def start(self) -> None:
        self.feed.add(lambda: self._page(None))

    def _page(self, position: Any) -> Outcome:
        client = self.feed.pool.client
        if self.paging == "cursor":
            cursor = {"cursor": position} if position else {}
            body = self.request.get(client, limit=self.page_size, **cursor)
            following = (body.get("additional_data") or {}).get("next_cursor") or None
        elif self.paging == "offset":
            start = position or 0
            limit = {"limit": self.page_size} if self.page_size else {}
            body = self.request.get(client, start=start, **limit)
            following = _next_offset(body, start, self.overlap)
        else:
            body = self.request.get(client)
            following = None
        items = page_items(body, self.request.path)
        self.guard.follow(items, following if self.paging == "cursor" else None)
        if self.time_field:
            self.position = _newest(items, self.time_field, self.position)
        if following is not None and self.keep_going is not None and not self.keep_going(items):
            following = None
        if following is None:
            self.complete = True
            return Outcome(Batch(items, self.tag))
        return Outcome(Batch(items, self.tag), [lambda: self._page(following)])


def _next_offset(body: dict, start: int, overlap: int) -> int | None:
    extra = body.get("additional_data") or {}
    pagination = extra.get("pagination") or extra  # leads and per-deal lists use a flat envelope
    items = body.get("data") or []
    if not pagination.get("more_items_in_collection") or not items:
        return None
    next_start = pagination.get("next_start")
    following = next_start if isinstance(next_start, int) else start + len(items)
    return max(start + 1, following - overlap)


class OffsetPages:
    """A v1 list read in full, `ahead` pages at a time at known offsets (see the module docstring)."""

    def __init__(
        self,
        feed: Feed,
        request: Request,
        tag: Any,
        page_size: int,
        overlap: int,
        ahead: int = 4,
        time_field: str | None = None,
    ) -> None:
        self.feed, self.request, self.tag = feed, request, tag
        self.page_size, self.stride = page_size, max(1, page_size - overlap)
        self.ahead = max(1, ahead)
        self.time_field = time_field  # ascending reads: resume after the pages received without a gap
        self._lock = threading.Lock()
        self._next = 0  # next page number to request
        self._end: int | None = None  # number of the last page, once a short page showed it
        self._received: dict[int, str | None] = {}  # page number -> newest time on it
        self._marks: dict[int, int | None] = {}  # page number -> its ids (`page_mark`)

    def resume_from(self) -> str | None:
        """The newest time on the pages received without a gap from the first (ascending reads)."""
        with self._lock:
            newest, number = None, 0
            while number in self._received:
                newest = self._received[number] or newest
                number += 1
            return newest

    @property
    def complete(self) -> bool:
        with self._lock:
            return self._end is not None and all(n in self._received for n in range(self._end + 1))

    def start(self) -> None:
        self._schedule()  # the first page alone: a short list costs one request, not `ahead`

    def _schedule(self) -> None:
        with self._lock:
            if self._end is not None and self._next > self._end:
                return
            number, self._next = self._next, self._next + 1
        self.feed.add(lambda: self._page(number))

    def _page(self, number: int) -> Outcome:
        with self._lock:
            beyond = self._end is not None and number > self._end
        if beyond:
            return Outcome()  # the list ended before this page: no request
        body = self.request.get(self.feed.pool.client, start=number * self.stride, limit=self.page_size)
        items = page_items(body, self.request.path)
        extra = body.get("additional_data") or {}
        more = (extra.get("pagination") or extra).get("more_items_in_collection")
        with self._lock:
            if self._end is not None and number > self._end:
                return Outcome()  # speculative page past the end: discarded
            self._check_moved(number, page_mark(items))
            self._received[number] = _newest(items, self.time_field, None) if self.time_field else None
            if not more or len(items) < self.page_size:
                self._end = number if self._end is None else min(self._end, number)
            wanted = self.ahead if number == 0 else 1  # after a full first page: `ahead` at a time
        for _ in range(wanted):
            self._schedule()
        return Outcome(Batch(items, self.tag))

    def _check_moved(self, number: int, mark: int | None) -> None:
        """A page equal to its neighbour: the server ignores `start` and the list would never end (under
        the lock)."""
        self._marks[number] = mark
        if mark is not None and mark in (self._marks.get(number - 1), self._marks.get(number + 1)):
            raise looping(self.request.path, "the same page again")


def _newest(items: list[Row], field_name: str, known: str | None) -> str | None:
    times = [t for row in items if isinstance(t := row.get(field_name), str)]
    return max([*times, *([known] if known else [])], default=None)


# ---- time windows -----------------------------------------------------------------------------------------


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _render(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Window:
    since: datetime | None  # inclusive (None: from the beginning)
    until: datetime  # exclusive, as sent to the API
    end: datetime  # records at or after this belong to a later window (end <= until)
    position: datetime | None = None  # update_time of the last record received
    density: float | None = None  # records per second around the position
    done: bool = False
    started: bool = False


class TimeWindows:
    """A v2 `updated_since` listing fetched as concurrent time windows (see the module docstring)."""

    def __init__(
        self,
        feed: Feed,
        request: Request,
        tag: Any,
        since: datetime | None,
        until: datetime,
        page_size: int,
        time_field: str = "update_time",
    ) -> None:
        self.feed, self.request, self.tag = feed, request, tag
        self.page_size, self.time_field = page_size, time_field
        self.windows = [Window(since, until, until)]
        self._guards: dict[int, LoopGuard] = {}  # per window (by id: the windows stay in `windows`)
        self._lock = threading.Lock()
        self.splits = 0

    @property
    def complete(self) -> bool:
        with self._lock:
            return all(w.done for w in self.windows)

    def resume_from(self) -> datetime | None:
        """Where the next run must start so that nothing is skipped (None: from the very beginning)."""
        with self._lock:
            pending = [w.position or w.since for w in self.windows if not w.done]
        if not pending:
            return None
        if any(p is None for p in pending):
            return None
        return min(p for p in pending if p is not None)

    def start(self) -> None:
        self._launch(self.windows[0])

    def _launch(self, window: Window) -> None:
        window.started = True
        self.feed.add(lambda: self._page(window, None))

    def _page(self, window: Window, cursor: str | None) -> Outcome:
        params: dict[str, Any] = {"updated_until": _render(window.until), "limit": self.page_size}
        if window.since is not None:
            params["updated_since"] = _render(window.since)
        if cursor:
            params["cursor"] = cursor
        body = self.request.get(self.feed.pool.client, **params)
        items = page_items(body, self.request.path)
        following = (body.get("additional_data") or {}).get("next_cursor") or None
        with self._lock:
            self._guards.setdefault(id(window), LoopGuard(self.request.path)).follow(items, following)
            items, reached_end = self._clip(window, items)
            self._learn(window, items)
            if reached_end or following is None:
                window.done = True
                return Outcome(Batch(items, self.tag))
            follow: list[Step] = [lambda: self._page(window, following)]
            wanted = self.feed.pool.spare() or self._active() < MIN_WINDOWS
            split = self._split() if wanted and self.feed.has_room() else None
        if split is not None:
            follow.append(lambda: self._page(split, None))
        return Outcome(Batch(items, self.tag), follow)

    def _clip(self, window: Window, items: list[Row]) -> tuple[list[Row], bool]:
        """Drop records that a later window covers (at or after `window.end`)."""
        if window.end >= window.until or not items:
            return items, False
        end = _render(window.end)
        field_name = self.time_field
        kept = [row for row in items if (row.get(field_name) or "") < end]
        return kept, len(kept) < len(items)

    def _learn(self, window: Window, items: list[Row]) -> None:
        times = [row.get(self.time_field) for row in (items[0], items[-1])] if items else []
        if len(times) < 2 or not all(isinstance(t, str) for t in times):
            return
        first, last = _parse_time(times[0]), _parse_time(times[-1])
        window.position = last
        span = max((last - first).total_seconds(), 1.0)
        window.density = len(items) / span

    def _active(self) -> int:
        return sum(1 for window in self.windows if not window.done)

    def _split(self) -> Window | None:
        """Cut the window with the most records left in two; the caller launches the new half."""
        best, best_left = None, float(SPLIT_MIN_PAGES * self.page_size)
        for window in self.windows:
            if window.done or window.position is None or window.density is None:
                continue
            left = window.density * (window.end - window.position).total_seconds()
            if left >= best_left:
                best, best_left = window, left
        if best is None or best.position is None:
            return None
        middle = best.position + (best.end - best.position) / 2
        middle = middle.replace(microsecond=0) + timedelta(seconds=1)
        if not best.position < middle < best.end:
            return None
        half = Window(middle, best.end, best.end, started=True)
        best.end = middle
        self.windows.append(half)
        self.splits += 1
        return half
