"""One connector sync in its own process, so its peak RSS is the connector's alone (the emulator is another
process). Used by the bench scripts; prints one JSON line with the figures on stdout.

    uv run python bench/sync_worker.py --base-url http://127.0.0.1:8765 --workdir /tmp/w [--entities a,b]

The sync runs as the pipeline script runs it: `pipedrive_source.steps.run` (dlt's `pipeline.run` step by
step: the destination's state first, then extract, normalize, load), then the vanished-id flagging. dlt's
three steps are timed apart (`phases`, the flagging counted with the load; `seconds` is the whole), with the
process's RSS as each step starts and its peak RSS so far as each ends, as dlt reports the steps to its
progress collector. `rows` are the rows the load left in DuckDB (this run's load id, counted there after
the load, outside `seconds`: `pipedrive_source.loaded`), `tables` the same per table; `rows_written` the
rows dlt's normalizer wrote, which also holds the rows the load drops (placeholders clearing a parent's old
children, records read twice). Without a load in this process (`--phases extract-normalize`) rows are
counted as written. The API token comes from the `BENCH_API_TOKEN` environment variable (never a
command-line flag).
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt  # noqa: E402
from dlt.common.runtime.collector import NullCollector  # noqa: E402

from pipedrive_source import RateLimitExhausted, SyncMonitor, pipedrive_source  # noqa: E402
from pipedrive_source import steps as sync_steps  # noqa: E402
from pipedrive_source.deletions import flag_vanished  # noqa: E402
from pipedrive_source.destinations import duckdb as duckdb_destination  # noqa: E402
from pipedrive_source.errors import caused_by  # noqa: E402
from pipedrive_source.limiter import Plan, PlanLimiter  # noqa: E402
from pipedrive_source.loaded import loaded_rows, written_rows  # noqa: E402

PLAN_KEYS = ("burst_limit", "daily_token_budget", "max_budget_share")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--workdir", required=True, help="pipelines dir and DuckDB file live here")
    parser.add_argument("--entities", default=None)
    parser.add_argument("--source-options", default="{}", help="JSON: extra pipedrive_source arguments")
    parser.add_argument("--normalize-workers", type=int, default=1)
    parser.add_argument("--file-format", default="parquet")
    parser.add_argument(
        "--phases",
        choices=("all", "extract-normalize", "load"),
        default="all",
        help="all three in this process, or the first two / the load alone (the load of the package the "
        "first two left in --workdir): the load's memory in a process of its own",
    )
    return parser.parse_args(argv)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rss_mb(pid: int | str = "self") -> float | None:
    """A process's resident memory now (Linux; None elsewhere). Of this one at the start of a phase: what
    the phases before it left (the load runs on top of what the extraction kept)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            kib = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return int(kib) / 1024


class StepMemory(NullCollector):
    """dlt's progress collector, told when each step of a run starts and ends: the first extract, normalize
    and load of the process get their seconds, the RSS as they start and the peak RSS so far as they end."""

    STEPS = ("extract", "normalize", "load")

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.at_start: dict[str, float | None] = {}
        self.peaks: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def on_start_trace_step(self, trace: Any, step: str, pipeline: Any) -> None:
        if step in self.STEPS and step not in self._started:
            self.at_start[step] = rss_mb()
            self._started[step] = time.perf_counter()

    def on_end_trace_step(
        self, trace: Any, step: Any, pipeline: Any, step_info: Any, send_state: bool
    ) -> None:
        name = step.step
        if name in self._started and name not in self.seconds:
            self.seconds[name] = time.perf_counter() - self._started[name]
            self.peaks[name] = peak_rss_mb()


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.normalize_workers != 1:
        os.environ["NORMALIZE__WORKERS"] = str(args.normalize_workers)
    steps = StepMemory()
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination=duckdb_destination(str(workdir / "bench.duckdb")),  # as the pipeline script makes it
        dataset_name="pipedrive",
        pipelines_dir=str(workdir / "pipelines"),
        progress=steps,
    )
    if args.phases == "load":
        return _load_alone(pipeline)
    monitor = SyncMonitor()
    options: dict[str, Any] = {"api_token": os.environ["BENCH_API_TOKEN"], "base_url": args.base_url}
    options.update(orjson.loads(args.source_options))
    accepted = inspect.signature(pipedrive_source.__wrapped__).parameters  # type: ignore[attr-defined]
    if any(key in options and key not in accepted for key in PLAN_KEYS):  # an older source: build the limiter
        options["limiter"] = PlanLimiter(Plan(**{k: options.pop(k) for k in PLAN_KEYS if k in options}))
    if args.entities:
        options["entities"] = args.entities.split(",")
    source = pipedrive_source(monitor=monitor, **options)
    outcome = "ok"
    started = time.perf_counter()
    try:
        if args.phases == "all":
            sync_steps.run(pipeline, source, {"loader_file_format": args.file_format})  # as the script does
        else:
            pipeline.extract(source, loader_file_format=args.file_format)
    except Exception as exc:  # budget exhaustion is an expected outcome of some benches
        if not caused_by(exc, RateLimitExhausted):
            raise
        outcome = "budget_exhausted"
        if args.phases == "all":  # what was extracted is normalized and loaded all the same
            pipeline.normalize()
            pipeline.load()
    if args.phases != "all":
        pipeline.normalize()
    phases = dict(steps.seconds)
    if args.phases == "all":
        t = time.perf_counter()
        flag_vanished(pipeline, monitor)
        phases["load"] = phases.get("load", 0.0) + time.perf_counter() - t
    seconds = time.perf_counter() - started
    written = written_rows(pipeline)
    # the rows the destination kept, counted there after the (timed) load; without a load, as written
    counts = loaded_rows(pipeline) if args.phases == "all" else written
    stats = monitor.client_stats
    return {
        "outcome": outcome,
        "rows": sum(counts.values()),
        "rows_written": sum(written.values()),  # placeholders and records read twice included
        "records": sum(p.rows for p in monitor.entities.values()),
        "seconds": round(seconds, 3),
        "phases": {k: round(v, 3) for k, v in phases.items()},
        "requests": stats.requests if stats else 0,
        "tokens": stats.tokens if stats else 0,
        "rate_limit_waits": stats.rate_limit_waits if stats else 0,
        # dlt retries a load job that failed transiently (DuckDB out of memory...): the sync still ends well
        "failed_job_attempts": failed_attempts(pipeline),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_mb_after": {phase: round(mb, 1) for phase, mb in steps.peaks.items()},
        "rss_mb_at_start": {phase: mb and round(mb, 1) for phase, mb in steps.at_start.items()},
        "tables": counts,
        "records_by_entity": {name: p.rows for name, p in monitor.entities.items()},
        "records_by_listing": getattr(monitor, "listing_records", {}),
        "stopped": getattr(monitor, "stopped", None),
        "by_label": {k: [v.requests, v.tokens] for k, v in (stats.by_label.items() if stats else [])},
    }


def failed_attempts(pipeline: dlt.Pipeline) -> int:
    """Load-job attempts that failed (dlt keeps a file for each, and retries the job)."""
    return len(list(Path(pipeline.pipelines_dir).rglob(".exceptions/*")))


def _load_alone(pipeline: dlt.Pipeline) -> dict[str, Any]:
    """The load of the normalized package in the pipeline's folder, in this fresh process."""
    at_start = rss_mb()
    t = time.perf_counter()
    info = pipeline.load()
    seconds = time.perf_counter() - t
    return {
        "outcome": "ok",
        "seconds": round(seconds, 3),
        "phases": {"load": round(seconds, 3)},
        "jobs": sum(len(package.jobs["completed_jobs"]) for package in info.load_packages),
        "failed_job_attempts": failed_attempts(pipeline),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_mb_at_start": {"load": at_start and round(at_start, 1)},
    }


if __name__ == "__main__":
    print(orjson.dumps(run(parse_args())).decode(), flush=True)
