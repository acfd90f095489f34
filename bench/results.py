"""Render bench/RESULTS.md from the JSON files the bench scripts wrote.

    uv run python bench/results.py --full full.json --plan20 b20.json [b20_small.json] \
        --plan120 b120.json [b120_small.json] --incremental inc.json [inc_large.json] --memory memory.json \
        [--before before.json] > bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load(path: str | None) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else None


def full_row(label: str, f: dict[str, Any]) -> str:
    minimum = f["spec_minimum"]["tokens"]
    over = f"{f['tokens'] / minimum - 1:+.1%}" if minimum else "n/a"
    phases = " / ".join(f"{f['phases'][p]:.1f}" for p in ("extract", "normalize", "load"))
    return (
        f"| {label} | {f['rows']:,.0f} ({f['records']:,.0f}) | {f['seconds']:.1f} ({phases}) | "
        f"{f['rows_per_s']:,.0f} ({f['records_per_s']:,.0f}) | {f['requests']:,.0f} | {f['tokens']:,.0f} "
        f"({over} vs {minimum:,}) | {f['tokens_per_10k_records']:.0f} | {f['peak_rss_mb']:.0f} | "
        f"{sum(f['emulator_429'].values())} | {len(f['runs'])} |"
    )


def plan_row(label: str, f: dict[str, Any]) -> str:
    extract, load_s = f["phases"]["extract"], f["phases"]["load"]
    extract_over = extract / f["min_seconds"] - 1
    return (
        f"| {label} | {f['scale']} | {f['requests']:,.0f} | {f['min_seconds']:.1f} | {f['seconds']:.1f} | "
        f"{f['over_minimum_time']:+.1%} | {extract:.1f} ({extract_over:+.1%}) | {load_s:.1f} | "
        f"{f['emulator_429']['burst']} | {len(f['runs'])} |"
    )


def render(args: argparse.Namespace) -> str:
    lines = [
        "# Throughput results",
        "",
        "Medians over the runs shown; produced by the scripts in `bench/` (see each script's docstring) on a",
        "2-core machine shared with other work, emulator in its own process. rows = rows loaded into DuckDB",
        "(child tables included): the rows of the run's load id in its tables, counted there after the load",
        "(`bench/sync_worker.py`, outside the timed part); the JSON's `rows_written` are the rows written,",
        "which also hold the rows the load drops (placeholders that clear a parent's old children, records",
        "read twice). records = API records read.",
        "",
        "## Full sync, no latency, no rate limit (local processing)",
        "",
        "| run | rows (records) | seconds (extract / normalize / load) | rows/s (records/s) | requests | "
        "tokens (vs spec minimum) | tokens / 10k records | peak RSS MB | 429s | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, path in (("before (sequential, JSON normalizer)", args.before), ("now", args.full)):
        if (f := load(path)) is not None:
            lines.append(full_row(f"{label}, {f.get('scale', '')}", f))
    plans = [
        (label, load(path))
        for label, paths in (("burst 20", args.plan20), ("burst 120", args.plan120))
        for path in paths or ()
    ]
    if any(f for _, f in plans):
        lines += [
            "",
            "## Under emulated plans (latency 100 ms +/- 20 ms jitter)",
            "",
            "min seconds = requests / (burst limit / 2 s): the fastest the plan allows for those requests.",
            "",
            "| plan | scale | requests | min seconds | seconds | over minimum | extract s (over minimum) | "
            "load s | burst 429s | runs |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [plan_row(label, f) for label, f in plans if f]
    for path in args.incremental or ():
        lines += incremental_section(load(path) or {})
    if (mem := load(args.memory)) is not None:
        peaks = ", ".join(f"{scale} {mb:.0f} MB" for scale, mb in mem["peak_rss_mb"].items())
        lines += ["", "## Memory (peak RSS of the connector process, full sync)", "", peaks]
    return "\n".join(lines) + "\n"


def incremental_section(inc: dict[str, Any]) -> list[str]:
    rows = []
    for label, key in (
        ("full (reference)", "full"),
        ("incremental", "incremental"),
        ("no change", "no_change"),
    ):
        f = inc[key]
        rows.append(
            f"| {label} | {f['requests']:,.0f} | {f['tokens']:,.0f} | {f['rows']:,.0f} | {f['seconds']:.1f} |"
        )
    changed = inc["changes"][0]["changed_records"]
    between = inc.get("minutes_between_syncs", 0)
    return [
        "",
        f"## Incremental ({inc['scale']}, {inc['change_share']:.0%} of records changed: {changed:,} records; "
        f"{between:g} minutes between syncs)",
        "",
        "| run | requests | tokens | rows | seconds |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"No-change requests per entity: {inc['no_change_requests_per_entity']:.2f} "
        f"({inc['entities_in_run']} entities).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name in ("full", "before", "memory"):
        parser.add_argument(f"--{name}", default=None)
    parser.add_argument("--incremental", nargs="*", default=None, help="one JSON per scale")
    for name in ("plan20", "plan120"):
        parser.add_argument(f"--{name}", nargs="*", default=None, help="one JSON per scale")
    print(render(parser.parse_args()), end="")


if __name__ == "__main__":
    main()
