"""Peak memory of the connector process for a full sync, small vs large: it should stay flat as the company
grows (pages are streamed; nothing proportional to the company is held).

    uv run python bench/memory.py --scales small large --runs 1 --json memory.json

`--load-apart` adds as many syncs whose load runs in a process of its own, after the extraction and
normalization ended in theirs: the load's own memory, without what the extraction left in the process.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import harness


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", nargs="+", default=["small", "large"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--source-options", default="{}", help="JSON: extra pipedrive_source arguments")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--load-apart", action="store_true", help="also syncs loading in a process apart")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    options = json.loads(args.source_options)
    root = Path(args.workdir) if args.workdir else None
    figures: dict[str, Any] = {}
    for scale in args.scales:
        runs, apart = [], []
        with harness.emulator(scale) as handle:
            for number in range(1, args.runs + 1):
                harness.prepare(handle)
                with harness.workdir(root, f"memory_{scale}_{number}") as where:
                    runs.append(harness.sync(handle, where, options))
                if args.load_apart:  # alternating with the whole syncs: the machine's pace changes
                    apart.append(sync_apart(handle, root, scale, number, options))
        figures[scale] = harness.summarize(runs)
        harness.print_figures(f"full sync, scale {scale}", figures[scale])
        if args.load_apart:
            figures[scale]["apart"] = summarize_apart(apart)
            print_apart(scale, figures[scale]["apart"])
    peaks = {scale: figures[scale]["peak_rss_mb"] for scale in args.scales}
    figures["peak_rss_mb"] = peaks
    print(f"\npeak RSS (MB): {peaks}")
    harness.write_json(args.json, figures)
    return figures


def sync_apart(
    handle: Any, root: Path | None, scale: str, number: int, options: dict[str, Any]
) -> dict[str, Any]:
    """A sync whose load runs in a fresh process: the peaks of the two processes."""
    harness.prepare(handle)
    with harness.workdir(root, f"memory_apart_{scale}_{number}") as where:
        first = harness.sync(handle, where, options, phases="extract-normalize")
        load = harness.sync(handle, where, options, phases="load")
    return {
        "extract_normalize_peak_rss_mb": first["peak_rss_mb"],
        "load_peak_rss_mb": load["peak_rss_mb"],
        "load_rss_mb_at_start": load["rss_mb_at_start"]["load"],
        "load_seconds": load["seconds"],
        "rows": first["rows"],
        "load_jobs": load["jobs"],
    }


def summarize_apart(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("extract_normalize_peak_rss_mb", "load_peak_rss_mb", "load_rss_mb_at_start", "load_seconds")
    return {**{key: statistics.median(run[key] for run in runs) for key in keys}, "runs": runs}


def print_apart(scale: str, apart: dict[str, Any]) -> None:
    print(
        f"  load apart (medians of {len(apart['runs'])}): extraction and normalization peak "
        f"{apart['extract_normalize_peak_rss_mb']:.1f} MB; the load alone from "
        f"{apart['load_rss_mb_at_start']:.1f} MB peaks at {apart['load_peak_rss_mb']:.1f} MB "
        f"({apart['load_seconds']:.1f} s)"
    )


if __name__ == "__main__":
    main()
