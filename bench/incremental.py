"""Incremental cost: a full sync, then `--change-share` of the records changed, an incremental sync, then a
sync with no change at all. Requests, tokens, rows and seconds of the two later syncs are what matters; they
should follow the size of the change, not of the company.

    uv run python bench/incremental.py --scale large --change-share 0.01 --runs 3 --json incremental.json

Each run: fresh pipeline, full sync (its figures are kept for reference), `POST /_emulator/mutate` with
creates/updates/deletes/archives summing to `change-share` of the live records, incremental sync, no-change
sync. Later runs mutate the same company further (every run starts from a fresh pipeline, so its full sync
sees the changes of earlier runs too).

The emulator's clock stands still between requests, so syncs would all run in the second of the last
change, which a schedule never does. `--minutes-between-syncs` (default 15, a cron interval) advances it
before each sync. With 0, every change stays in the boundary second the connector must read again (it could
still gain records), the worst case: the no-change run then reads every changed record once more.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import harness

from pipedrive_source.entities import DEFAULT_ENTITIES

SPLIT = {"updates": 0.7, "creates": 0.15, "deletes": 0.1, "archives": 0.05}  # of the changed records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="large", choices=["tiny", "small", "large"])
    parser.add_argument("--change-share", type=float, default=0.01)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--source-options", default="{}", help="JSON: extra pipedrive_source arguments")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes-between-syncs", type=float, default=15.0)
    return parser.parse_args(argv)


def mutation(handle: Any, share: float, seed: int) -> dict[str, int]:
    live = sum(handle.control.counts().values())
    changed = max(1, round(live * share))
    body = {kind: max(1, round(changed * part)) for kind, part in SPLIT.items()}
    handle.control.mutate(seed=seed, **body)
    return {"live_records": live, "changed_records": sum(body.values()), **body}


def later(handle: Any, minutes: float) -> None:
    if minutes > 0:
        handle.control.mutate(ops=[{"op": "advance_clock", "seconds": round(minutes * 60)}])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    options = json.loads(args.source_options)
    root = Path(args.workdir) if args.workdir else None
    full_runs, incremental_runs, quiet_runs, changes = [], [], [], []
    with harness.emulator(args.scale, seed=args.seed) as handle:
        for number in range(1, args.runs + 1):
            with harness.workdir(root, f"incremental_{number}") as where:
                harness.prepare(handle)
                full_runs.append(harness.sync(handle, where, options))
                changes.append(mutation(handle, args.change_share, seed=1000 + number))
                for runs in (incremental_runs, quiet_runs):
                    later(handle, args.minutes_between_syncs)
                    harness.prepare(handle)
                    runs.append(harness.sync(handle, where, options))
            inc, quiet = incremental_runs[-1], quiet_runs[-1]
            print(
                f"run {number}: {changes[-1]['changed_records']:,} records changed -> incremental "
                f"{inc['requests']} requests / {inc['tokens']} tokens / {inc['rows']:,} rows / "
                f"{inc['seconds']:.1f} s; no change {quiet['requests']} requests / {quiet['rows']} rows",
                flush=True,
            )
    entities = len(options.get("entities") or DEFAULT_ENTITIES)
    figures = {
        "scale": args.scale,
        "change_share": args.change_share,
        "minutes_between_syncs": args.minutes_between_syncs,
        "changes": changes,
        "full": harness.summarize(full_runs),
        "incremental": harness.summarize(incremental_runs),
        "no_change": harness.summarize(quiet_runs),
        "entities_in_run": entities,
    }
    figures["no_change_requests_per_entity"] = figures["no_change"]["requests"] / entities
    full, inc, quiet = figures["full"], figures["incremental"], figures["no_change"]
    figures["incremental_share_of_full"] = {
        key: inc[key] / full[key] if full[key] else None for key in ("requests", "tokens", "seconds")
    }
    harness.print_figures(f"full sync (reference), scale {args.scale}", full)
    harness.print_figures(f"incremental after {args.change_share:.1%} changed", inc)
    harness.print_figures("no-change run", quiet)
    print(f"  incremental / full: {figures['incremental_share_of_full']}")
    per_entity = figures["no_change_requests_per_entity"]
    print(f"  no-change requests per entity: {per_entity:.2f} ({entities} entities)")
    harness.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
