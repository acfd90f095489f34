"""The long model-based run: many rounds of random emulator mutations, each followed by a sync and a
row-by-row comparison of every table with the emulator's ground truth (CI runs the short version,
tests/test_reliability_model.py).

    uv run python tools/soak.py --rounds 200                   # scale tiny, seed 1, default entities
    uv run python tools/soak.py --rounds 50 --seed 7 --entities all --with-known-bugs --out soak.json
    uv run python tools/soak.py --rounds 100 --scale small --features all   # see --help for the features
    uv run python tools/soak.py --rounds 100 --entities followers          # default + the followers tables

Prints one line per round and the figures at the end (rounds, rows compared, seconds, failures); writes them
as JSON to --out (default soak-result.json). Exit code 0 when every round matched, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the shared test helpers and the package

from connector_fixtures import ALL_TABLES, DEFAULT_TABLES  # noqa: E402
from reliability_support import (  # noqa: E402
    FEATURES,
    FOLLOWER_TABLES,
    KNOWN_BUGS,
    ModelWalk,
    Round,
    secret_emulator,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", default="tiny", help="emulator scale (tiny | small)")
    parser.add_argument(
        "--entities",
        choices=("default", "followers", "all"),
        default="default",
        help="default tables, those and the followers tables (whose adds and removals the walk makes), or "
        "every table (the opt-in per-deal tables keep what a deal held when it last changed: the walk "
        "reports that as differences)",
    )
    parser.add_argument(
        "--with-known-bugs",
        action="store_true",
        help=f"also walk into the mutations of known bugs: {', '.join(KNOWN_BUGS) or 'none at the moment'}",
    )
    parser.add_argument(
        "--features",
        default="",
        help=f"comma list of walk features ({', '.join(FEATURES)}) or 'all': the connector's full-read "
        "interval under clock jumps, runs stopped by a small daily budget, fields retyped, hard_delete on "
        "every run (default: none: every list read in full every run, deleted rows flagged)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep the DuckDB files here")
    parser.add_argument("--out", type=Path, default=Path("soak-result.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    choices = {"default": DEFAULT_TABLES, "followers": [*DEFAULT_TABLES, *FOLLOWER_TABLES], "all": ALL_TABLES}
    tables = list(choices[args.entities])
    features = FEATURES if args.features == "all" else [f for f in args.features.split(",") if f]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pipedrive-soak-"))
    started = time.perf_counter()
    with secret_emulator(scale=args.scale, seed=7) as emulator:
        walk = ModelWalk(
            emulator,
            workdir,
            seed=args.seed,
            tables=tables,
            skip=() if args.with_known_bugs else KNOWN_BUGS,
            features=features,
        )
        report(walk.start())
        for _ in range(args.rounds):
            report(walk.step())
    result = figures(args, walk, time.perf_counter() - started, workdir)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print_figures(result, args.out)
    return 0 if result["failures"] == 0 else 1


def report(done: Round) -> None:
    status = "ok" if not done.problems else f"MISMATCH {json.dumps(done.problems)[:1000]}"
    ops = ", ".join(done.ops) or "no change"
    kind = ("reconcile" if done.reconcile else "sync") + (" STOP" if done.stopped else "")
    print(
        f"round {done.number:>4}  {kind:<14} {done.loaded_rows:>6} rows loaded"
        f"  {done.compared_rows:>6} compared  {done.seconds:5.1f} s  [{ops}]  {status}",
        flush=True,
    )


def figures(args: argparse.Namespace, walk: ModelWalk, seconds: float, workdir: Path) -> dict[str, Any]:
    rounds = walk.rounds
    failed = [r for r in rounds if r.problems]
    ops = Counter(op.split()[0] for r in rounds[1:] for op in r.ops)
    return {
        "rounds": len(rounds) - 1,  # the first full sync is round 0
        "seed": args.seed,
        "scale": args.scale,
        "entities": args.entities,
        "known_bugs_walked": args.with_known_bugs,
        "features": sorted(walk.features),
        "rows_compared": sum(r.compared_rows for r in rounds),
        "rows_loaded": sum(r.loaded_rows for r in rounds),
        "reconcile_rounds": sum(r.reconcile for r in rounds),
        "budget_stops": sum(r.stopped for r in rounds),
        "unchanged_rows_checked": sum(r.unchanged_rows for r in rounds),
        "no_change_rounds": sum(not r.ops for r in rounds[1:]),
        "mutations": dict(ops),
        "seconds": round(seconds, 1),
        "seconds_per_round": round(seconds / max(1, len(rounds)), 2),
        "failures": len(failed),
        "failed_rounds": [asdict(r) for r in failed[:20]],
        "workdir": str(workdir),
    }


def print_figures(result: dict[str, Any], out: Path) -> None:
    print(
        f"\nsoak: {result['rounds']} rounds (+ the first full sync), "
        f"{result['rows_compared']:,} rows compared, "
        f"{result['rows_loaded']:,} rows loaded, {result['reconcile_rounds']} reconcile runs, "
        f"{result['budget_stops']} budget stops, {result['unchanged_rows_checked']:,} rows of lists not due "
        "checked unchanged, "
        f"{result['seconds']:.0f} s, {result['failures']} failing rounds"
    )
    print(f"mutations: {result['mutations']}")
    for failed in result["failed_rounds"][:3]:
        print(
            f"round {failed['number']} ({', '.join(failed['ops'])}): {json.dumps(failed['problems'])[:600]}"
        )
    print(f"result written to {out}")


if __name__ == "__main__":
    sys.exit(main())
