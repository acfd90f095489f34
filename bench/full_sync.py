"""A full sync of a whole emulated company into DuckDB: rows, seconds, rows/s, requests, tokens, peak RSS.

    uv run python bench/full_sync.py --scale large --json full.json --runs 3
    uv run python bench/full_sync.py --latency-ms 100 --jitter-ms 20 --burst-limit 120 --json b120.json
    uv run python bench/full_sync.py --latency-ms 100 --jitter-ms 20 --burst-limit 20 --json b20.json

The emulator runs in its own process (started once; each run gets fresh rate-limit windows), every run syncs
into a fresh pipeline and DuckDB file in its own worker process. Without `--burst-limit` the API imposes no
rate limit (local processing is measured); with it the connector is told nothing about the plan and has to
learn it from the headers. Figures are medians over `--runs`; rows are all rows loaded (child tables
included; counted in DuckDB after the load, see `sync_worker.py`), `rows_written` the rows dlt's normalizer
wrote (rows the load drops included), records the API records read. With a burst limit, `min_seconds` =
requests / (limit / 2 s) is the fastest the plan allows for the requests made, and `over_minimum_time` how
far the run was above it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import harness


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--scale", default="large", choices=["tiny", "small", "large"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the figures (medians and every run) here")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--burst-limit", type=int, default=None, help="requests per 2 s (default: none)")
    parser.add_argument("--normalize-workers", type=int, default=1)
    parser.add_argument("--source-options", default="{}", help="JSON: extra pipedrive_source arguments")
    parser.add_argument("--workdir", default=None, help="keep pipelines and DuckDB files here")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import json

    args = parse_args(argv)
    settings: dict[str, Any] = {"latency_ms": args.latency_ms, "jitter_ms": args.jitter_ms}
    if args.burst_limit:
        settings["burst_limit"] = args.burst_limit
    options = json.loads(args.source_options)
    root = Path(args.workdir) if args.workdir else None
    runs = []
    with harness.emulator(args.scale, seed=args.seed, **settings) as handle:
        for number in range(1, args.runs + 1):
            harness.prepare(handle)
            with harness.workdir(root, f"full_{number}") as where:
                result = harness.sync(handle, where, options, args.normalize_workers)
            runs.append(result)
            print(
                f"run {number}: {result['rows']:,} rows in {result['seconds']:.1f} s, {result['requests']:,} "
                f"requests, peak RSS {result['peak_rss_mb']:.0f} MB, phases {result['phases']}",
                flush=True,
            )
    extra: dict[str, Any] = {"scale": args.scale, "settings": settings, "source_options": options}
    figures = harness.summarize(runs, extra)
    if args.burst_limit:
        figures["min_seconds"] = figures["requests"] / (args.burst_limit / 2.0)
        figures["over_minimum_time"] = figures["seconds"] / figures["min_seconds"] - 1
        figures["rate_by_tenth"] = rate_by_tenth(runs[-1]["requests_per_second"], args.burst_limit / 2.0)
    title = f"full sync, scale {args.scale}, {settings}, median of {len(runs)}"
    harness.print_figures(title, figures)
    harness.write_json(args.json, figures)
    return figures


def rate_by_tenth(per_second: list[int], allowed: float) -> list[float]:
    """The request rate in each tenth of the time from the first to the last request, as a share of the
    rate the plan allows: where a run fell short of it (start, tail, or all along)."""
    if not per_second:
        return []
    first = next(i for i, n in enumerate(per_second) if n)
    busy = per_second[first:]
    tenths = [busy[len(busy) * i // 10 : len(busy) * (i + 1) // 10] for i in range(10)]
    return [round(sum(t) / len(t) / allowed, 2) if t else 0.0 for t in tenths]


if __name__ == "__main__":
    main()
