"""Shared pieces of the bench scripts: the emulator in its own process, one sync per worker process, medians,
the spec's minimum token cost for the records a sync read, and the JSON / table output.

Every measured sync runs in a fresh `bench/sync_worker.py` process, so its peak RSS is the connector's alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipedrive_source.emulator import EmulatorHandle, run_emulator  # noqa: E402
from pipedrive_source.entities import BY_NAME, CURSOR, DEAL_BATCH, NONE, PER_PARENT, PER_RECORD  # noqa: E402
from pipedrive_source.settings import DEAL_IDS_PER_REQUEST  # noqa: E402

UNLIMITED_BURST = 1_000_000  # "no rate limit": local processing is what is measured
BIG_BUDGET = 2_000_000_000
WORKER = Path(__file__).resolve().parent / "sync_worker.py"


@contextlib.contextmanager
def emulator(scale: str, **settings: Any) -> Iterator[EmulatorHandle]:
    """The emulator in its own process; rate limits out of the way unless given."""
    settings.setdefault("burst_limit", UNLIMITED_BURST)
    settings.setdefault("daily_budget", BIG_BUDGET)
    print(f"starting the emulator (scale {scale}) ...", flush=True)
    with run_emulator(scale=scale, mode="process", **settings) as handle:
        yield handle


def prepare(handle: EmulatorHandle, **settings: Any) -> None:
    """Runtime settings for the next run, with fresh rate-limit windows and stats."""
    if settings:
        handle.control.settings(**settings)
    handle.control.reset_ratelimit()
    handle.control.reset_stats()


def sync(
    handle: EmulatorHandle,
    workdir: Path,
    source_options: dict[str, Any] | None = None,
    normalize_workers: int = 1,
    timeout_s: float = 3600,
    worker: Path = WORKER,
    env: dict[str, str] | None = None,
    phases: str = "all",
) -> dict[str, Any]:
    """One sync in a worker process (`worker`: another checkout's, to compare code; `env`: settings added to
    its environment; `phases`: the worker's `--phases`); its figures plus the emulator's 429 counts."""
    cmd = [
        sys.executable,
        str(worker),
        "--base-url",
        handle.base_url,
        "--workdir",
        str(workdir),
        "--source-options",
        json.dumps(source_options or {}),
        "--normalize-workers",
        str(normalize_workers),
        *(["--phases", phases] if phases != "all" else []),
    ]
    environment = {
        **os.environ,
        **(env or {}),
        "BENCH_API_TOKEN": handle.api_token,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
    }
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=environment, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"sync worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if failed := result.get("failed_job_attempts"):
        print(f"  warning: {failed} load job attempts failed and were retried:\n{done.stderr[-1500:]}")
    stats = handle.control.stats()
    result["emulator_429"] = stats.get("rate_limited", {})
    result["emulator_tokens"] = stats.get("tokens_spent")
    result["requests_per_second"] = stats.get("per_second", [])
    return result


@contextlib.contextmanager
def workdir(root: Path | None, name: str) -> Iterator[Path]:
    """A sync's pipelines and DuckDB file: under `root` (kept), else in a temporary folder removed after
    (a large sync leaves 350-700 MB; a day of benches filled the disk)."""
    if root is not None:
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="pipedrive-bench-") as base:
        path = Path(base) / name
        path.mkdir()
        yield path


def spec_minimum(result: dict[str, Any]) -> dict[str, int]:
    """The fewest requests and tokens the spec allows for the records this sync read.

    Per listing: ceil(records / the endpoint's largest page) pages (at least one) at its `x-token-cost`;
    a list without paging is one request; children of deals: one request per 100 deals read; one request
    per parent where the API has nothing else (product variations, phases per board). Listings whose
    records were not counted apart are assumed to split the entity's records as evenly as possible."""
    records: dict[str, int] = result.get("records_by_entity", {})
    listings: dict[str, list[int]] = result.get("records_by_listing", {})
    asked: dict[str, Any] = result.get("by_label", {})  # label -> [requests, tokens]
    requests = tokens = 0
    for name, count in records.items():
        entity = BY_NAME.get(name)
        if entity is None:
            continue
        for index, listing in enumerate(entity.listings):
            cost = listing.cost or entity.cost
            per_listing = listings.get(name)
            n = per_listing[index] if per_listing else (count if index == 0 else 0)
            pages = _pages(entity, n, records)
            if entity.strategy in (PER_RECORD, PER_PARENT):
                # one request per parent it had to read: all of them in a full sync, the changed ones in an
                # incremental run (none: phases between full reads), though every product is listed
                pages = min(pages, (asked.get(name) or [0])[0])
            requests += pages
            tokens += pages * cost
    return {"requests": requests, "tokens": tokens}


def _pages(entity: Any, n: int, records: dict[str, int]) -> int:
    if entity.strategy == DEAL_BATCH:
        return math.ceil(records.get(entity.parent, 0) / DEAL_IDS_PER_REQUEST)
    if entity.strategy in (PER_RECORD, PER_PARENT):
        return records.get(entity.parent, 0)
    if entity.paging == NONE:
        return 1
    size = entity.page_size or 500
    return max(1, math.ceil(n / size)) if entity.paging == CURSOR or size else 1


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Medians of the figures over runs (plus every run), with rows/s and tokens per 10k rows."""
    for run in runs:
        run["rows_per_s"] = run["rows"] / run["seconds"] if run["seconds"] else None
        run["records_per_s"] = run["records"] / run["seconds"] if run["seconds"] else None
        run["tokens_per_10k_rows"] = 10_000 * run["tokens"] / run["rows"] if run["rows"] else None
        run["tokens_per_10k_records"] = 10_000 * run["tokens"] / run["records"] if run["records"] else None
    keys = ("rows", "records", "seconds", "rows_per_s", "records_per_s", "requests", "tokens", "peak_rss_mb")
    out: dict[str, Any] = {key: median_of(runs, key) for key in keys}
    if any(run.get("rows_written") is not None for run in runs):  # runs of an older worker lack it
        out["rows_written"] = median_of(runs, "rows_written")
    out.update({key: median_of(runs, key) for key in ("tokens_per_10k_rows", "tokens_per_10k_records")})
    out["phases"] = {
        phase: statistics.median(run["phases"][phase] for run in runs) for phase in runs[0]["phases"]
    }
    for key in ("peak_rss_mb_after", "rss_mb_at_start"):  # by phase (runs of an older worker lack them)
        phases = [run[key] for run in runs if run.get(key)]
        if phases:
            out[key] = {phase: median_of(phases, phase) for phase in phases[0]}
    out["emulator_429"] = {
        kind: max(run["emulator_429"].get(kind, 0) for run in runs) for kind in ("burst", "daily", "injected")
    }
    out["spec_minimum"] = spec_minimum(runs[0])
    minimum = out["spec_minimum"]["tokens"]
    out["tokens_over_minimum"] = (out["tokens"] / minimum - 1) if minimum else None
    out["runs"] = runs
    out.update(extra or {})
    return out


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {path}")


def print_figures(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title}")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in figures.get("phases", {}).items())
    minimum = figures.get("spec_minimum", {})
    written = f", {figures['rows_written']:,.0f} written" if "rows_written" in figures else ""
    print(
        f"  rows {figures['rows']:,.0f} loaded{written} (records {figures['records']:,.0f}) "
        f"in {figures['seconds']:.1f} s "
        f"= {figures['rows_per_s']:,.0f} rows/s ({figures['records_per_s']:,.0f} records/s); {phases}"
    )
    print(
        f"  requests {figures['requests']:,.0f}, tokens {figures['tokens']:,.0f} "
        f"({figures['tokens_per_10k_records']:.1f} per 10k records; spec minimum "
        f"{minimum.get('tokens', 0):,} tokens / {minimum.get('requests', 0):,} requests), "
        f"peak RSS {figures['peak_rss_mb']:.0f} MB, "
        f"429s {figures['emulator_429']}"
    )
    after, at_start = figures.get("peak_rss_mb_after"), figures.get("rss_mb_at_start")
    if after and at_start and {"extract", "load"} <= after.keys() & at_start.keys():
        print(
            f"  memory: extraction from {at_start['extract']:.0f} to a peak of {after['extract']:.0f} MB; "
            f"the load from {at_start['load']:.0f} MB (what the extraction kept) to {after['load']:.0f} MB"
        )
    for key in ("min_seconds", "over_minimum_time", "rate_by_tenth"):
        if key in figures:
            value = figures[key]
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
